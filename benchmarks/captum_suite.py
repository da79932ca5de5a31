"""Captum's own test suite (``tests/attr``, ``tests/metrics``) run against our engine.

    scripts/captum_suite                              # both runs, Captum from the default mirror
    scripts/captum_suite --ours -k "lime or shap"     # only the run with our classes swapped in
    scripts/captum_suite --captum /path/to/captum     # a checkout, or a git mirror (read at --rev)
    scripts/captum_suite --ours --tests influence     # Captum's training-data influence tests

Captum's source is checked out at run time into a temporary directory (``git archive`` of ``captum/``,
``tests/`` and ``setup.py`` from a mirror, or an existing checkout used in place) and put first on
``PYTHONPATH``, so ``import captum`` is that revision, test helpers (``captum.testing``) included.
Nothing is written into this repository: reports, logs and byte code go to the temporary directory,
whose path is printed.

Each run is a pytest process that loads this module as a plugin (``-p benchmarks.captum_suite``).
With ``CAPTUM_SUITE_SWAP=1`` the plugin swaps, before any test module is imported, every public class
and function of ``attribution`` whose name Captum also has (:func:`swap_table`) into Captum's public
packages (``captum.attr``, ``captum.metrics``, ``captum.attr.visualization``) and into the module that
defines it (``captum.attr._core.integrated_gradients``, ...).  A defining module is swapped by putting a
copy of it in ``sys.modules``: tests and ``captum.testing`` import ours from the copy, while Captum's own
code keeps its import-time names and globals, so Captum classes that we lack stay wholly Captum's.  Captum
test helpers that subclass Captum's base classes (its reference conductance) are imported before the swap.

Captum's ``tests/attr/test_llm_attr_hf_compatibility.py`` loads ``hf-internal-testing/tiny-random-LlamaForCausalLM``
from the Hugging Face hub; the runner builds a local tiny random Llama and Llama-style tokenizer in the temporary
directory (:mod:`benchmarks._local_hf`) and points both runs at it (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE=1``).

Either way the plugin records each test's outcome and, for a failure, the exception type, its message,
where it was raised and which of our classes or functions the failing frames involve, as JSON; the
runner compares the two runs and groups the failures with ours by cause (:func:`cause`).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import importlib.util
import inspect
import io
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _local_hf

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = Path("/work/.mirror/pytorch+captum/repo")
TEST_DIRS = ("tests/attr", "tests/metrics")
"""The test folders run by default; ``--tests influence`` runs ``tests/influence`` (training-data influence), and
likewise ``concept``, ``robust`` and ``module``."""
SUITES = {
    "attr": "tests/attr",
    "metrics": "tests/metrics",
    "influence": "tests/influence",
    "concept": "tests/concept",
    "robust": "tests/robust",
    "module": "tests/module",
}
SKIPPED_FILES = {
    "tests/attr/test_data_parallel.py": "CUDA only (no test is generated without a GPU), and it binds TCP port 29500 "
    "at import, so two runs side by side collide",
}
"""Test files left out of both runs (``--ignore``), with the reason printed in the report."""
HF_TEST_FILE = "tests/attr/test_llm_attr_hf_compatibility.py"
"""Loads ``hf-internal-testing/tiny-random-LlamaForCausalLM`` from the Hugging Face hub: it runs against a
local tiny random Llama and Llama-style tokenizer built in the work dir (:mod:`benchmarks._local_hf`), put
in a hub cache that ``HF_HUB_CACHE`` names, read with ``HF_HUB_OFFLINE=1``."""

PLUGIN = "benchmarks.captum_suite"
ENV_REPORT = "CAPTUM_SUITE_REPORT"
ENV_SWAP = "CAPTUM_SUITE_SWAP"
ENV_CHECKOUT = "CAPTUM_SUITE_CHECKOUT"

# Our public modules whose ``__all__`` is offered for the swap, and the Captum package searched for each.
OUR_MODULES = {
    "attribution": "captum.attr",
    "attribution.methods.surrogate": "captum.attr",
    "attribution.visualization": "captum.attr",
    "attribution.metrics": "captum.metrics",
    "attribution.influence": "captum.influence",
    "attribution.concept": "captum.concept",
    "attribution.robust": "captum.robust",
    "attribution.module": "captum.module",
    "attribution.llm": "captum.attr",  # LLMAttribution & co. (captum.attr._core.llm_attr) and the interpretable inputs
}
# Captum test helpers that subclass Captum's base classes: reference implementations, kept on Captum's bases.
PRESERVED_HELPERS = ("captum.testing.attr.helpers.conductance_reference",)


# ---------------------------------------------------------------------------------------------------------
# The swap (runs inside the pytest process)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Swap:
    """One name of ours put in place of Captum's: where Captum defines it and where it is re-exported."""

    name: str
    ours: Any
    defined_in: str
    exported_in: tuple[str, ...]


def _import_all(package: str) -> None:
    """Import every submodule of ``package`` so that all of Captum binds its own names before the swap."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        try:
            importlib.import_module(info.name)
        except Exception:  # optional dependencies (remote providers, ...): left unimported
            continue


def _our_public_names() -> dict[str, tuple[Any, str]]:
    """``name -> (object, Captum package to search)`` for our public classes and functions."""
    names: dict[str, tuple[Any, str]] = {}
    for module_name, captum_package in OUR_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:  # a family this checkout does not have
            if error.name != module_name:
                raise
            continue
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__.startswith("attribution"):
                names.setdefault(name, (obj, captum_package))
    return names


def swap_table() -> list[Swap]:
    """The names to swap: ours that a Captum module under the matching package defines under the same name."""
    captum_modules = {name: module for name, module in sys.modules.items() if name.startswith("captum.")}
    swaps = []
    for name, (ours, captum_package) in sorted(_our_public_names().items()):
        defining = [
            module_name
            for module_name, module in captum_modules.items()
            if module_name.startswith(captum_package)
            and getattr(getattr(module, name, None), "__module__", None) == module_name
            and getattr(getattr(module, name), "__name__", None) == name
        ]
        if len(defining) != 1:
            continue
        theirs = getattr(captum_modules[defining[0]], name)
        exported = tuple(
            module_name
            for module_name, module in captum_modules.items()
            if hasattr(module, "__path__") and module_name != defining[0] and getattr(module, name, None) is theirs
        )
        swaps.append(Swap(name, ours, defining[0], exported))
    return swaps


def _replace_module(name: str, replacements: dict[str, Any]) -> None:
    """Put a copy of module ``name`` with ``replacements`` in ``sys.modules`` and in its parent packages.

    Functions defined in the original keep its ``__dict__`` as their globals, so Captum's own code still
    sees Captum's names; whatever imports the module from now on gets the copy.
    """
    original = sys.modules[name]
    copy = types.ModuleType(name, original.__doc__)
    copy.__dict__.update(original.__dict__)
    copy.__dict__.update(replacements)
    sys.modules[name] = copy
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("captum") and hasattr(module, "__path__"):
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, copy)


def install_swap() -> list[Swap]:
    """Swap our classes and functions into Captum (see the module docstring); returns what was swapped."""
    for package in sorted(set(OUR_MODULES.values())):
        _import_all(package)
    for helper in PRESERVED_HELPERS:
        try:
            importlib.import_module(helper)
        except ImportError:
            pass
    swaps = swap_table()
    by_module: dict[str, dict[str, Any]] = collections.defaultdict(dict)
    for swap in swaps:
        by_module[swap.defined_in][swap.name] = swap.ours
        for package in swap.exported_in:
            setattr(sys.modules[package], swap.name, swap.ours)
    for module_name, replacements in by_module.items():
        _replace_module(module_name, replacements)
    return swaps


# ---------------------------------------------------------------------------------------------------------
# The plugin: outcomes and failure causes, written as JSON at the end of the session
# ---------------------------------------------------------------------------------------------------------

_OURS_DIR = str(Path(importlib.util.find_spec("attribution").origin).parent)
_BASES = frozenset(
    {"Attribution", "GradientAttribution", "PerturbationAttribution", "LayerAttribution", "NeuronAttribution"}
)  # named in type hints and super() cells of every method


class _Recorder:
    def __init__(self, path: str, swaps: list[Swap]) -> None:
        self.path = path
        self.swaps = swaps
        self.tests: dict[str, dict[str, Any]] = {}
        self.our_names = {id(s.ours): s.name for s in swaps}
        self.our_classes = {s.ours: s.name for s in swaps if inspect.isclass(s.ours)}
        self.names = {s.name for s in swaps}

    def _involved(self, nodeid: str, tb: types.TracebackType | None) -> list[str]:
        """Our swapped names that the failing test involves, best evidence first.

        The objects that the failing frames hold (our instances, classes or functions); else the swapped
        names that the code of those frames mentions; else our class names spelled in the test id
        (``test_simple_kernel_shap_...`` -> KernelShap).  The base classes count only when nothing else does.
        """
        held: set[str] = set()
        named: set[str] = set()
        while tb is not None:
            frame = tb.tb_frame
            for value in list(frame.f_locals.values()):
                if id(value) in self.our_names:
                    held.add(self.our_names[id(value)])
                elif type(value).__module__.startswith("attribution"):
                    held.update(self.our_classes[cls] for cls in type(value).__mro__[:1] if cls in self.our_classes)
            if not frame.f_code.co_filename.startswith(_OURS_DIR):
                named.update(self.names.intersection(frame.f_code.co_names))
            tb = tb.tb_next
        spelled = re.sub(r"[^a-z]", "", nodeid.rpartition("::")[2].lower())
        in_id = {name for name in self.our_classes.values() if name.lower() in spelled}
        for found in (held - _BASES, named - _BASES, in_id - _BASES, held | named):
            if found:
                return sorted(found)
        return []

    @staticmethod
    def _where(tb: types.TracebackType | None) -> str:
        """``file:function`` of the innermost frame in our package, else in the Captum checkout or its tests."""
        frames = []
        while tb is not None:
            frames.append(tb.tb_frame.f_code)
            tb = tb.tb_next
        for code in reversed(frames):
            if code.co_filename.startswith(_OURS_DIR):
                return f"attribution/{os.path.relpath(code.co_filename, _OURS_DIR)}:{code.co_name}"
        checkout = os.environ.get(ENV_CHECKOUT, "")
        for code in reversed(frames):
            if checkout and code.co_filename.startswith(checkout):
                return f"captum:{os.path.relpath(code.co_filename, checkout)}:{code.co_name}"
        return f"{os.path.basename(frames[-1].co_filename)}:{frames[-1].co_name}" if frames else ""

    def failure(self, nodeid: str, when: str, excinfo: Any) -> None:
        entry = self.tests.setdefault(nodeid, {})
        if "exc_type" in entry:
            return
        entry.update(
            when=when,
            exc_type=excinfo.type.__name__,
            message=str(excinfo.value)[:2000],
            where=self._where(excinfo.tb),
            involves=self._involved(nodeid, excinfo.tb),
        )

    def outcome(self, nodeid: str, outcome: str) -> None:
        """Passed only if setup, call and teardown all passed; a failure in any phase fails the test."""
        entry = self.tests.setdefault(nodeid, {})
        previous = entry.get("outcome")
        if outcome == "failed" or previous is None or (previous == "passed" and outcome == "skipped"):
            entry["outcome"] = "failed" if previous == "failed" else outcome

    def write(self) -> None:
        import captum

        data = {
            "captum_file": captum.__file__,
            "swapped": [
                {
                    "name": s.name,
                    "class": inspect.isclass(s.ours),
                    "defined_in": s.defined_in,
                    "exported_in": s.exported_in,
                }
                for s in self.swaps
            ],
            "tests": self.tests,
        }
        Path(self.path).write_text(json.dumps(data, indent=1))


_recorder: _Recorder | None = None


def pytest_configure(config: Any) -> None:
    global _recorder
    report = os.environ.get(ENV_REPORT)
    if not report:
        return
    import captum

    checkout = os.environ.get(ENV_CHECKOUT)
    if checkout and not Path(captum.__file__).resolve().is_relative_to(Path(checkout).resolve()):
        raise RuntimeError(f"captum resolves to {captum.__file__}, not to the checkout {checkout}")
    swaps = install_swap() if os.environ.get(ENV_SWAP) == "1" else []
    _recorder = _Recorder(report, swaps)


def pytest_runtest_makereport(item: Any, call: Any) -> None:
    import pytest

    if _recorder is not None and call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception):
        _recorder.failure(item.nodeid, call.when, call.excinfo)


def pytest_runtest_logreport(report: Any) -> None:
    if _recorder is not None:
        _recorder.outcome(report.nodeid, report.outcome)


def pytest_collectreport(report: Any) -> None:
    if _recorder is not None and report.failed:
        entry = _recorder.tests.setdefault(report.nodeid, {"outcome": "failed", "when": "collect"})
        entry.update(exc_type="CollectionError", message=str(report.longrepr)[-2000:], where="", involves=[])


def pytest_sessionfinish(session: Any) -> None:
    if _recorder is not None:
        _recorder.write()


# ---------------------------------------------------------------------------------------------------------
# The runner: check Captum out, run pytest once or twice, compare and group
# ---------------------------------------------------------------------------------------------------------


def _git_dir(source: Path) -> Path | None:
    """``source`` as a git directory (bare, or a work tree's ``.git``); None when it is a Captum checkout."""
    if (source / "captum" / "__init__.py").is_file() and (source / "tests").is_dir():
        return None
    git_dir = source / ".git" if (source / ".git").exists() else source
    if not (git_dir / "HEAD").is_file():
        raise SystemExit(f"--captum: {source} is neither a Captum checkout (captum/, tests/) nor a git repository")
    return git_dir


def checkout(source: Path, rev: str, workdir: Path) -> tuple[Path, str]:
    """A directory holding Captum's ``captum/`` and ``tests/``, and a description of the revision.

    ``source`` is either such a directory (used in place) or a git repository, bare or not, from which
    ``rev`` is archived into ``workdir`` (only the paths the tests need: large binary blobs elsewhere in the
    tree may be missing from a partial mirror).
    """
    git_dir = _git_dir(source)
    if git_dir is None:
        return source, f"checkout {source}"
    git = ["git", f"--git-dir={git_dir}"]
    resolved = subprocess.run([*git, "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True, text=True)
    if resolved.returncode != 0:
        raise SystemExit(f"--rev: {rev!r} is not a commit of {git_dir}: {resolved.stderr.strip()}")
    commit = resolved.stdout.strip()
    archive = subprocess.run([*git, "archive", commit, "captum", "tests", "setup.py"], check=True, capture_output=True)
    target = workdir / "captum_src"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    subject = subprocess.run([*git, "log", "-1", "--format=%cs %s", commit], capture_output=True, text=True).stdout
    return target, f"{source} at {commit[:12]} ({subject.strip()})"


def _has_timeout_plugin() -> bool:
    return importlib.util.find_spec("pytest_timeout") is not None


def _folders(args: argparse.Namespace) -> list[str]:
    return [SUITES[name] for name in args.tests] if args.tests else list(TEST_DIRS)


def prepare_local_hub(workdir: Path, args: argparse.Namespace) -> tuple[Path | None, dict[str, str]]:
    """The hub cache holding the local tiny Llama (None when not built) and the test files to leave out.

    The model and tokenizer are built (:mod:`benchmarks._local_hf`, in a subprocess: torch and transformers
    stay out of the runner) only when ``tests/attr`` runs.  Without ``transformers`` the test file skips its
    tests itself; when the build fails, the file is left out with the error as the reason.
    """
    skipped = dict(SKIPPED_FILES)
    if str(Path(HF_TEST_FILE).parent) not in _folders(args):
        return None, skipped
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("tokenizers") is None:
        return None, skipped
    cache = workdir / "hf_cache"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    built = subprocess.run(
        [sys.executable, "-m", "benchmarks._local_hf", str(cache)], cwd=REPO, env=env, capture_output=True, text=True
    )
    if built.returncode != 0:
        error = (built.stderr.strip().splitlines() or ["(no output)"])[-1]
        skipped[HF_TEST_FILE] = f"the local stand-in for the hub's tiny Llama could not be built: {error}"
        return None, skipped
    return cache, skipped


def run_pytest(src: Path, workdir: Path, label: str, swap: bool, args: argparse.Namespace) -> subprocess.Popen:
    """Start one pytest run over Captum's tests; its JSON report and log go to ``workdir``."""
    folders = _folders(args)
    command = [sys.executable, "-m", "pytest", *folders, "-q", "-p", "no:cacheprovider", "-p", PLUGIN]
    command += [
        f"--rootdir={src}",
        "-o",
        "addopts=",
        "-W",
        "ignore::DeprecationWarning",
        "--continue-on-collection-errors",
    ]
    command += [f"--ignore={path}" for path in args.skipped]
    if _has_timeout_plugin():
        command.append(f"--timeout={args.timeout}")
    if args.k:
        command += ["-k", args.k]
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # byte code goes to the work dir (PYTHONPYCACHEPREFIX)
    env.update(
        PYTHONPATH=os.pathsep.join([str(src), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONPYCACHEPREFIX=str(workdir / "pycache"),
        MPLBACKEND="Agg",
        HF_HUB_OFFLINE="1",
        **{ENV_REPORT: str(workdir / f"{label}.json"), ENV_SWAP: "1" if swap else "0", ENV_CHECKOUT: str(src)},
    )
    if args.hf_cache is not None:  # hf-internal-testing/tiny-random-LlamaForCausalLM resolves to the local one
        env.update(HF_HUB_CACHE=str(args.hf_cache))
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with open(workdir / f"{label}.log", "w") as log:
        return subprocess.Popen(command, cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT)


_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(\.\d+)?(e[-+]?\d+)?")
_TENSOR = re.compile(r"tensor\(.*?\)(?=[,:\s]|$)", re.DOTALL)
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
_LONG_QUOTE = re.compile(r"(?<!\w)'[^']{40,}'?|\"[^\"]{40,}\"?")  # printed output, reprs: '...'


def cause(exc_type: str, message: str, classes: Iterable[str] = ()) -> str:
    """A failure's cause: the exception type and the first line of its message with numbers, tensors and
    the names of our ``classes`` normalized, so that failures that differ only in values group together."""
    message = _ADDRESS.sub("", _TENSOR.sub("tensor(...)", message))
    first = next((line for line in message.strip().splitlines() if line.strip()), "")
    first = _LONG_QUOTE.sub("'...'", first)
    if classes:
        first = re.sub(r"\b(" + "|".join(sorted(classes, key=len, reverse=True)) + r")\b", "<ours>", first)
    first = _NUMBER.sub("N", first)
    return f"{exc_type}: {first[:150]}"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"tests": {}, "swapped": []}


def _passed(tests: dict[str, dict[str, Any]]) -> set[str]:
    return {nodeid for nodeid, entry in tests.items() if entry.get("outcome") == "passed"}


def _counts(items: Iterable[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in collections.Counter(items).most_common())


def report(captum_run: dict[str, Any] | None, ours_run: dict[str, Any] | None, examples: int) -> list[str]:
    """The summary lines: counts, tests that pass only with ours, and our failures grouped by cause."""
    lines = []
    runs = {"Captum": captum_run, "ours": ours_run}
    for label, run in runs.items():
        if run is None:
            continue
        outcomes = collections.Counter(entry.get("outcome", "failed") for entry in run["tests"].values())
        lines.append(
            f"{label:>6}: {len(run['tests'])} tests run, {outcomes['passed']} passed, {outcomes['failed']} failed, "
            f"{outcomes['skipped']} skipped   (captum from {run.get('captum_file', '?')})"
        )
    if ours_run is not None:
        swapped = sorted(s["name"] for s in ours_run["swapped"])
        lines.append(f"swapped ({len(swapped)}): {', '.join(swapped)}")
    if captum_run is not None and ours_run is not None:
        theirs, ours = _passed(captum_run["tests"]), _passed(ours_run["tests"])
        lines.append(
            f"tests collected: {len(set(captum_run['tests']) | set(ours_run['tests']))}; passed with Captum: "
            f"{len(theirs)}; passed with ours: {len(ours)}; passed with ours among those that pass with Captum: "
            f"{len(ours & theirs)} of {len(theirs)}"
        )
        lines += _per_file(captum_run["tests"], ours_run["tests"])
        only_ours = sorted(ours - theirs)
        lines.append(f"pass with ours but not with Captum: {len(only_ours)}")
        lines += [f"    {nodeid} (Captum: {_describe(captum_run['tests'].get(nodeid))})" for nodeid in only_ours]
    if ours_run is None:
        return lines
    failed = {
        nodeid: entry
        for nodeid, entry in ours_run["tests"].items()
        if entry.get("outcome") == "failed"
        and (captum_run is None or captum_run["tests"].get(nodeid, {}).get("outcome") == "passed")
    }
    scope = "that pass with Captum" if captum_run is not None else "(no Captum run to compare)"
    classes = [s["name"] for s in ours_run["swapped"] if s.get("class")]
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for nodeid, entry in failed.items():
        groups[cause(entry.get("exc_type", "?"), entry.get("message", ""), classes)].append(nodeid)
    lines.append(f"failures with ours among tests {scope}: {len(failed)} in {len(groups)} groups")
    for number, (key, nodeids) in enumerate(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])), 1):
        entries = [failed[n] for n in nodeids]
        lines.append(f"[{number}] {len(nodeids):4d}  {key}")
        lines.append(f"        involves: {_counts(name for e in entries for name in e.get('involves') or ['-'])}")
        lines.append(f"        raised at: {_counts(e.get('where') or '?' for e in entries)}")
        lines += [f"        e.g. {nodeid}" for nodeid in nodeids[:examples]]
    return lines


def _per_file(captum_tests: dict[str, Any], our_tests: dict[str, Any]) -> list[str]:
    """Passed with Captum and with ours, per test file, files with most lost tests first."""
    files: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for nodeid in set(captum_tests) | set(our_tests):
        counts = files[nodeid.split("::")[0]]
        counts[0] += captum_tests.get(nodeid, {}).get("outcome") == "passed"
        counts[1] += our_tests.get(nodeid, {}).get("outcome") == "passed"
    lines = [f"{'per file':<60} {'Captum':>7} {'ours':>6}"]
    for name, (theirs, ours) in sorted(files.items(), key=lambda kv: (kv[1][1] - kv[1][0], kv[0])):
        lines.append(f"    {name:<56} {theirs:>7} {ours:>6}")
    return lines


def _describe(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "not run"
    if entry.get("outcome") != "failed":
        return entry.get("outcome", "?")
    return cause(entry.get("exc_type", "?"), entry.get("message", ""))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/captum_suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--captum", type=Path, default=DEFAULT_MIRROR, help="Captum checkout or git repository")
    parser.add_argument("--rev", default="HEAD", help="revision to check out of a git repository (default HEAD)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--ours", dest="runs", action="store_const", const=("ours",), help="only the run with ours")
    which.add_argument("--captum-only", dest="runs", action="store_const", const=("captum",), help="only Captum")
    which.add_argument("--both", dest="runs", action="store_const", const=("captum", "ours"), help="both (default)")
    parser.add_argument("-k", default="", help="pytest -k expression selecting tests")
    parser.add_argument(
        "--tests", action="append", choices=sorted(SUITES), help="Captum's test folders to run (default attr, metrics)"
    )
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test (pytest-timeout), default 300")
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=2, help="runs side by side (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS); 0: default")
    parser.add_argument("--examples", type=int, default=2, help="example test ids per failure group")
    parser.add_argument("--workdir", type=Path, help="where the checkout, logs and JSON go (default: a new temp dir)")
    args = parser.parse_args(argv)
    args.runs = args.runs or ("captum", "ours")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.workdir is not None and args.workdir.resolve().is_relative_to(REPO):
        raise SystemExit(f"--workdir: {args.workdir} is inside the repository; pick a directory outside {REPO}")
    _git_dir(args.captum.resolve())  # a wrong --captum fails before anything is created
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="captum_suite_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        src, revision = checkout(args.captum.resolve(), args.rev, workdir)
    except SystemExit:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    print(f"Captum: {revision}\nwork dir (checkout, logs, JSON reports): {workdir}")
    args.hf_cache, args.skipped = prepare_local_hub(workdir, args)
    if args.hf_cache is not None:
        print(f"{HF_TEST_FILE}: {_local_hf.REPO_ID} is a local tiny random Llama (hub cache {args.hf_cache})")
    for path, why in args.skipped.items():
        print(f"skipped {path}: {why}")
    if not _has_timeout_plugin():
        print("pytest-timeout is not installed: no per-test time limit")
    start = time.monotonic()
    pending = list(args.runs)
    running: dict[str, subprocess.Popen] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            label = pending.pop(0)
            running[label] = run_pytest(src, workdir, label, label == "ours", args)
            print(f"started the {label} run (log: {workdir / (label + '.log')})", flush=True)
        for label, process in list(running.items()):
            if process.poll() is not None:
                del running[label]
                tail = (workdir / f"{label}.log").read_text().strip().splitlines()[-1:] or ["(no output)"]
                print(f"{label} run done after {time.monotonic() - start:.0f} s: {tail[0]}", flush=True)
        time.sleep(1)
    runs = {label: _load(workdir / f"{label}.json") for label in args.runs}
    print("\n".join(report(runs.get("captum"), runs.get("ours"), args.examples)))
    shutil.rmtree(workdir / "pycache", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
