"""Tests for lightning_xai._write.records: the numpy CRC-32C equals TensorBoard's own, event files written with it
read back through TensorBoard's checksum-verifying reader, and the writer is put back as it was."""

import os

import pytest
import torch
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorboard_masked_crc32c
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard import SummaryWriter

from lightning_xai._write.records import LANE, SHORT, crc32c, fast_checksums, masked_crc32c


def test_known_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue's check value
    assert crc32c(b"") == 0


@pytest.mark.parametrize("length", [1, 3, 4, 5, SHORT - 1, SHORT, SHORT + 1, LANE * 8 - 1, 4096, 4097, 50_021, 300_000])
def test_masked_checksum_equals_tensorboards(length):
    data = os.urandom(length)
    assert masked_crc32c(data) == tensorboard_masked_crc32c(data)


def test_structured_data_equals_tensorboards():
    for data in (bytes(10_000), b"\xff" * 10_000, bytes(range(256)) * 97):
        assert masked_crc32c(data) == tensorboard_masked_crc32c(data)


def _events(directory):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    (path,) = [p for p in directory.iterdir() if p.name.startswith("events.out.tfevents")]
    return list(EventFileLoader(str(path)).Load())  # verifies every record's checksums


def test_records_written_inside_read_back_and_writer_restored(tmp_path):
    writer = SummaryWriter(tmp_path)
    record_writer = writer._get_file_writer().event_writer._async_writer._writer
    with fast_checksums(writer):
        assert "write" in vars(record_writer)
        for step in range(3):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
            writer.add_image("noise", torch.rand(3, 64, 64), step)
        writer.flush()
    assert "write" not in vars(record_writer) and type(record_writer) is RecordWriter
    writer.add_scalar("loss", 0.1, 3)  # TensorBoard's own framing again
    writer.close()
    events = _events(tmp_path)
    tags = [value.tag for event in events for value in event.summary.value]
    assert tags.count("loss") == 4 and tags.count("noise") == 3


def test_no_writer_or_unknown_writer_is_left_alone():
    with fast_checksums(None):
        pass

    class Elsewhere:  # a logger experiment without TensorBoard's record writer
        pass

    elsewhere = Elsewhere()
    with fast_checksums(elsewhere):
        pass
    assert vars(elsewhere) == {}


def test_restored_after_an_exception(tmp_path):
    writer = SummaryWriter(tmp_path)
    record_writer = writer._get_file_writer().event_writer._async_writer._writer
    with pytest.raises(RuntimeError), fast_checksums(writer):
        raise RuntimeError("training failed")
    assert "write" not in vars(record_writer)
    writer.close()
