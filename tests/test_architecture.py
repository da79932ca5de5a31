"""The layering the README's Layout section describes, checked on the import statements.

- A family module (the public classes of one family) imports the functional core, the base, the
  canonical boundary and small shared helpers, never another family module.
- ``lightning_xai`` uses only public names of ``attribution``; ``attribution`` knows nothing of Lightning.
- The callbacks never import the demo data and models.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = (
    *("gradient", "path", "backprop", "lrp", "noise_tunnel", "perturbation", "shapley", "surrogate", "dataloader"),
    *("layer", "layer_path", "layer_backprop", "layer_perturbation"),
    *("neuron", "neuron_backprop", "neuron_perturbation"),
)
UTILITIES = ("stat", "summarizer", "embeddings", "baselines")
"""Captum's helpers that are not methods: statistics of attributions, interpretable embeddings, baselines."""
UTILITY_MAY_IMPORT = ("attribution._checks", "attribution._autograd", *(f"attribution.{u}" for u in UTILITIES))
FAMILY_MAY_IMPORT = (
    "attribution.functional",  # the core
    "attribution._base",  # base classes, traits and the helpers families share
    "attribution._canonical",  # the one boundary for inputs, baselines, targets
    "attribution._features",  # the boundary for feature masks
    "attribution._checks",
    "attribution._progress",
    "attribution.registry",
)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_module_imports_no_sibling_family(family):
    for module, names in _imports(ROOT / "attribution" / f"{family}.py"):
        if not module.startswith("attribution"):
            continue
        targets = [f"{module}.{name}" for name in names] if module == "attribution" else [module]
        for target in targets:
            assert target.startswith(FAMILY_MAY_IMPORT), f"attribution/{family}.py imports {target}"


def test_every_public_module_is_a_family_or_a_utility():
    known = {*FAMILIES, *UTILITIES, "registry", "outputs", "utils", "visualization", "text_visualization", "__init__"}
    public = {path.stem for path in (ROOT / "attribution").glob("*.py") if not path.stem.startswith("_")}
    assert public - known == set(), "classify the new module in tests/test_architecture.py"


@pytest.mark.parametrize("utility", UTILITIES)
def test_a_utility_imports_no_family(utility):
    for module, _ in _imports(ROOT / "attribution" / f"{utility}.py"):
        if module.startswith("attribution"):
            assert module.startswith(UTILITY_MAY_IMPORT), f"attribution/{utility}.py imports {module}"


def test_the_callbacks_use_only_public_names_of_the_engine():
    for path in _modules("lightning_xai"):
        for module, names in _imports(path):
            if module.split(".")[0] != "attribution":
                continue
            private = [part for part in module.split(".") + names if part.startswith("_")]
            assert not private, f"{path.relative_to(ROOT)} imports {module} {names}"


def test_the_engine_knows_nothing_of_lightning_and_the_callbacks_nothing_of_the_demos():
    for path in _modules("attribution"):
        for module, _ in _imports(path):
            assert module.split(".")[0] not in ("lightning", "lightning_xai", "captum"), path
    for path in _modules("lightning_xai"):
        if "demos" in path.parts:
            continue
        for module, _ in _imports(path):
            assert not module.startswith("lightning_xai.demos"), path
