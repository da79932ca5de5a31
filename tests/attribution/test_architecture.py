"""The layering of the engine, checked on the import statements of the real files.

``attribution/`` holds the public modules (the package, ``registry``, ``utils``, ``outputs`` and the two
visualization modules) and ten folders, each a tier that imports only the tiers below it:

- ``_internal/``: private machinery (the canonical boundary, checks, autograd, rules, chunking, ...);
  it imports nothing else of the engine.
- ``functional/``: the core, plain functions over canonical tuples; it imports ``_internal`` and itself.
- ``methods/``: the public classes, thin; a method file imports the core, ``_internal``, the base classes
  (``methods/base.py``) and the registry, never another method file.  Its core is the functional file of
  its own name, at its own level or at the input level (``methods/neuron/backprop.py`` uses
  ``functional/backprop.py`` with a neuron objective), and every functional file has its twin in
  ``methods/`` (torchmetrics' pattern).
- ``metrics/``: the metrics of explanations; they import ``_internal`` and the core.
- ``helpers/``: Captum's helpers that are not methods; they import ``_internal`` only.
- ``influence/``: training-data influence (Captum's ``captum.influence``); it imports ``_internal`` and itself.
- ``concept/``: TCAV and its parts (Captum's ``captum.concept``); it imports ``_internal``, the core, the
  method classes (TCAV's default layer method) and itself.
- ``robust/``: adversarial attacks and their metrics (Captum's ``captum.robust``); ``_internal``, the core,
  itself.
- ``module/``: stochastic gates (Captum's ``captum.module``); ``_internal`` and itself.
- ``llm/``: LLM attribution (Captum's ``LLMAttribution`` & co.); it imports ``_internal``, the core, the method
  classes it wraps and itself.

Across packages: ``lightning_xai`` uses only public names of ``attribution``; ``attribution`` knows
nothing of Lightning; the callbacks never import the demo data and models.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "attribution"
PUBLIC_MODULES = {
    "__init__.py",
    "registry.py",
    "utils.py",
    "outputs.py",
    "visualization.py",
    "text_visualization.py",
    "lrp.py",  # the LRP methods, Captum's rules and the published rules and composites in one namespace
}
TIERS = {
    "_internal": ("attribution._internal",),
    "functional": ("attribution._internal", "attribution.functional"),
    "methods": ("attribution._internal", "attribution.functional", "attribution.methods.base", "attribution.registry"),
    "metrics": ("attribution._internal", "attribution.functional", "attribution.metrics"),
    "helpers": ("attribution._internal", "attribution.helpers"),
    "influence": ("attribution._internal", "attribution.influence"),
    "concept": ("attribution._internal", "attribution.functional", "attribution.methods", "attribution.concept"),
    "robust": ("attribution._internal", "attribution.functional", "attribution.robust"),
    "module": ("attribution._internal", "attribution.module"),
    "llm": ("attribution._internal", "attribution.functional", "attribution.methods", "attribution.llm"),
}
"""What the files of each folder may import from the engine (module prefixes)."""
SAME_FAMILY = {
    # LayerLRP reads the LRP rules set on the modules, and takes composites as LRP does
    "methods/layer/lrp.py": ("attribution.methods.lrp", "attribution.methods.lrp_rules"),
    "methods/lrp.py": ("attribution.methods.lrp_rules",),  # LRP takes the published rules and composites
}
"""Method files that may import the input-level method file of their own family, and which."""
NO_TWIN = {
    "functional/layer/maps.py": "reshape transforms and interpolate, for every layer method and attribution.utils",
    "functional/neuron/selection.py": "the neuron objective, to which every neuron method applies its core",
}
"""Functional files without a method file of the same path, and why."""
SHARED_CORE = ("attribution.functional.layer.maps", "attribution.functional.neuron.selection")
"""Functional modules that any method file may use besides its own core."""


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):  # a relative import keeps its leading dots
            found.append(("." * node.level + (node.module or ""), [alias.name for alias in node.names]))
    return found


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _engine_imports(path: Path) -> list[str]:
    """The engine modules ``path`` imports: ``from attribution.a import b`` counts as ``attribution.a.b``
    when ``b`` is a module, else as ``attribution.a``."""
    targets = []
    for module, names in _imports(path):
        assert not module.startswith("."), f"{path.relative_to(ROOT)}: import from attribution, not .{module}"
        if module.split(".")[0] != "attribution":
            continue
        submodules = [f"{module}.{name}" for name in names if _is_module(f"{module}.{name}")]
        targets += submodules if submodules else [module]
    return targets


def _files(folder: str) -> list[Path]:
    files = sorted((ENGINE / folder).rglob("*.py"))
    assert files, f"attribution/{folder}/ holds no file: update tests/attribution/test_architecture.py"
    return files


def _name(path: Path) -> str:
    return path.relative_to(ENGINE).as_posix()


def test_the_top_level_holds_the_public_modules_and_the_tiers():
    entries = {p.name for p in ENGINE.iterdir() if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__")}
    assert entries == PUBLIC_MODULES | set(TIERS), "put the new module in a folder, or classify it here"


@pytest.mark.parametrize("folder", sorted(TIERS))
def test_each_tier_imports_only_the_tiers_below_it(folder):
    for path in _files(folder):
        allowed = TIERS[folder] + SAME_FAMILY.get(_name(path), ())
        for target in _engine_imports(path):
            assert target.startswith(allowed), f"attribution/{_name(path)} imports {target}"


def _core_modules() -> dict[str, str]:
    """Every top-level name defined in ``functional/``, mapped to its module."""
    defined = {}
    for path in _files("functional"):
        module = "attribution." + ".".join(path.relative_to(ENGINE).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.setdefault(node.name, module)
            elif isinstance(node, ast.Assign):
                defined.update((t.id, module) for t in node.targets if isinstance(t, ast.Name))
    return defined


def _cores_used(path: Path, defined: dict[str, str]) -> set[str]:
    """The functional modules a method file uses, also through ``from attribution import functional``."""
    used = {t for t in _engine_imports(path) if t.startswith("attribution.functional.")}
    if "attribution.functional" in _engine_imports(path):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "functional":
                used.add(defined.get(node.attr, f"attribution.functional.{node.attr}"))
    return used


@pytest.mark.parametrize("path", _files("methods"), ids=_name)
def test_a_method_file_uses_the_core_of_its_own_name(path):
    if path.name in ("__init__.py", "base.py"):
        return
    level = path.relative_to(ENGINE / "methods").parent.parts  # () for input methods, ("layer",), ("neuron",)
    own = {"attribution.functional." + ".".join((*level, path.stem)), f"attribution.functional.{path.stem}"}
    for core in _cores_used(path, _core_modules()):
        assert core in own or core in SHARED_CORE, f"attribution/{_name(path)} uses {core}"


def test_every_functional_file_has_its_twin_in_methods():
    twins = 0
    for path in _files("functional"):
        relative = path.relative_to(ENGINE / "functional")
        if path.name == "__init__.py" or _name(path) in NO_TWIN:
            continue
        assert (ENGINE / "methods" / relative).is_file(), f"attribution/{_name(path)} has no methods/{relative}"
        twins += 1
    assert twins > 10
    assert all((ENGINE / name).is_file() for name in NO_TWIN), "an exception names a file that is gone"


def test_the_callbacks_use_only_public_names_of_the_engine():
    for path in sorted((ROOT / "lightning_xai").rglob("*.py")):
        for module, names in _imports(path):
            if module.split(".")[0] != "attribution":
                continue
            private = [part for part in module.split(".") + names if part.startswith("_")]
            assert not private, f"{path.relative_to(ROOT)} imports {module} {names}"


def test_the_engine_knows_nothing_of_lightning_and_the_callbacks_nothing_of_the_demos():
    for path in sorted(ENGINE.rglob("*.py")):
        for module, _ in _imports(path):
            assert module.split(".")[0] not in ("lightning", "lightning_xai", "captum"), path
    for path in sorted((ROOT / "lightning_xai").rglob("*.py")):
        if "demos" in path.parts:
            continue
        for module, _ in _imports(path):
            assert not module.startswith("lightning_xai.demos"), path
