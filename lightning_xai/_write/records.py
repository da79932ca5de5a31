"""TensorBoard event records checksummed at numpy speed while the monitor logs.

TensorBoard's writer frames every record with a CRC-32C computed in pure Python, one byte at a time, on its
writer thread (about 7 ms for one of the monitor's 50 kB images, holding the GIL, and the writer's short
queue makes the training loop wait for it). :func:`fast_checksums` gives a ``SummaryWriter``'s record
writer the same framing with the checksum below, byte for byte the same file, for as long as the monitor
runs, and puts the original back after.

The checksum is linear over GF(2) once the initial register is folded into the data, so the data is cut
into lanes of ``LANE`` bytes that are checksummed side by side (one numpy operation per byte position for
all lanes), then pairs of neighbouring lanes are joined by moving the left one's register over the right
one's length (a fixed linear map per level, applied as four byte tables).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np

POLYNOMIAL = 0x82F63B78
"""CRC-32C (Castagnoli), bit-reflected, as TFRecord framing uses."""
LANE = 64
"""Bytes per lane: the number of numpy steps per record, whatever its length."""
SHORT = 256
"""Records shorter than this (headers, scalars) are checksummed byte by byte."""
MASK_DELTA = 0xA282EAD8
_BITS = np.arange(32, dtype=np.uint32)


@lru_cache(maxsize=1)
def _table() -> np.ndarray:
    """The register after one byte ``b`` entered a zero register, for every ``b``."""
    register = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        register = np.where(register & 1, (register >> 1) ^ POLYNOMIAL, register >> 1).astype(np.uint32)
    return register


def _apply(images: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A linear map of 32-bit registers, given by the ``images`` of its 32 unit vectors, applied to ``values``."""
    bits = ((values[:, None] >> _BITS) & 1).astype(bool)
    mapped: np.ndarray = np.bitwise_xor.reduce(np.where(bits, images, np.uint32(0)), axis=1)
    return mapped


@lru_cache(maxsize=32)
def _shift_tables(length: int) -> np.ndarray:
    """``(4, 256)`` tables of the map "run the register over ``length`` zero bytes", one per register byte."""
    unit = np.left_shift(np.uint32(1), _BITS)
    step = (unit >> 8) ^ _table()[unit & 0xFF]  # one zero byte
    power, images = length, unit.copy()
    while power:  # images of step ** length, by squaring
        if power & 1:
            images = _apply(step, images)
        step, power = _apply(step, step), power >> 1
    values = np.arange(256, dtype=np.uint32)
    return np.stack([_apply(images, values << np.uint32(8 * k)) for k in range(4)])


def _shift(registers: np.ndarray, length: int) -> np.ndarray:
    tables = _shift_tables(length)
    shifted: np.ndarray = (
        tables[0][registers & 0xFF]
        ^ tables[1][(registers >> 8) & 0xFF]
        ^ tables[2][(registers >> 16) & 0xFF]
        ^ tables[3][registers >> 24]
    )
    return shifted


def crc32c(data: bytes) -> int:
    """The CRC-32C of ``data`` (initial register and final xor all ones)."""
    if len(data) < SHORT:
        table, register = _table(), 0xFFFFFFFF
        for byte in data:
            register = int(table[(register ^ byte) & 0xFF]) ^ (register >> 8)
        return register ^ 0xFFFFFFFF
    lanes = 1 << (-(-len(data) // LANE) - 1).bit_length()
    padded = np.zeros(lanes * LANE, dtype=np.uint8)  # leading zeros leave a zero register as it is
    padded[-len(data) :] = np.frombuffer(data, dtype=np.uint8)
    padded[-len(data) : -len(data) + 4] ^= 0xFF  # the all-ones initial register, folded into the data
    table, registers = _table(), np.zeros(lanes, dtype=np.uint32)
    for column in padded.reshape(lanes, LANE).T.copy():
        registers = table[(registers ^ column) & 0xFF] ^ (registers >> 8)
    length = LANE
    while len(registers) > 1:
        registers = _shift(registers[0::2], length) ^ registers[1::2]
        length *= 2
    return int(registers[0]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The checksum as TFRecord framing stores it (rotated and offset)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def _framed_write(record_writer: Any, data: bytes) -> None:
    """What TensorBoard's ``RecordWriter.write`` does: length, its checksum, the data, its checksum."""
    header = struct.pack("<Q", len(data))
    footer = struct.pack("<I", masked_crc32c(data))
    record_writer._writer.write(header + struct.pack("<I", masked_crc32c(header)) + data + footer)


def _record_writer(summary_writer: Any) -> Any | None:
    """The ``RecordWriter`` behind a ``SummaryWriter``, where this TensorBoard version has one we know."""
    try:
        record_writer = summary_writer._get_file_writer().event_writer._async_writer._writer
    except AttributeError:
        return None
    return record_writer if hasattr(record_writer, "_writer") and "write" not in vars(record_writer) else None


@contextmanager
def fast_checksums(summary_writer: Any | None) -> Iterator[None]:
    """Within the block, ``summary_writer`` (a TensorBoard ``SummaryWriter``, or None) frames its records with
    :func:`masked_crc32c`; the writer is as it was after."""
    record_writer = None if summary_writer is None else _record_writer(summary_writer)
    if record_writer is None:
        yield
        return
    record_writer.write = lambda data: _framed_write(record_writer, data)
    try:
        yield
    finally:
        del record_writer.write
