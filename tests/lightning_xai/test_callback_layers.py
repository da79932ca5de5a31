"""The layers of ``lightning_xai``, checked on the import statements of every module (at any depth,
``TYPE_CHECKING`` blocks included):

    _config  <-  _compute  <-  _draw  <-  _write  <-  monitor, regression  <-  lightning_xai
    _config  <-  _compute  <-  explorer (the TensorBoard tab: reads what _write wrote, imports only these)

- every private module sits in one of the four layer packages (``ls`` shows the roles);
- a module imports only its own layer or earlier ones: ``_compute`` never imports ``_draw`` or
  ``_write``, ``_draw`` never imports ``_write``;
- no two modules import each other, directly or through others (a cycle hides a layer's role);
- the callbacks and their layers never import the demo data and models.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lightning_xai"
LAYERS = ("_config", "_compute", "_draw", "_write", "explorer", "callbacks", "package")
"""In import order: a module may import its own layer and the ones before it."""
EXPLORER_IMPORTS = {"_config", "_compute", "explorer"}
"""The explorer reads the files the callbacks wrote: it never draws, writes or runs a callback."""
CALLBACKS = (
    "lightning_xai.monitor",
    "lightning_xai.regression",
    "lightning_xai.influence_monitor",
    "lightning_xai.influence_regression",
    "lightning_xai.epoch_points",
    "lightning_xai.robustness_monitor",
    "lightning_xai.concept_monitor",
    "lightning_xai.language_monitor",
)


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _layer(module: str) -> str | None:
    """The layer of a module of lightning_xai; None for the demos, which are outside the layers."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "demos":
        return None
    if module == "lightning_xai":
        return "package"
    if module in CALLBACKS:
        return "callbacks"
    return parts[1] if parts[1] in LAYERS else f"unplaced ({module})"


def _imports(module: str) -> list[str]:
    """The lightning_xai modules that ``module`` imports: a name imported from a package counts as the
    submodule when there is one (``from lightning_xai._config import tags``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found += [t for t in targets if t == "lightning_xai" or t.startswith("lightning_xai.")]
    return sorted(set(found))


def _graph() -> dict[str, list[str]]:
    return {module: [t for t in _imports(module) if t != module] for module in MODULES}


def test_every_private_module_sits_in_a_layer():
    unplaced = [m for m in MODULES if _layer(m) is not None and _layer(m) not in LAYERS]
    assert not unplaced, f"put these modules in one of {LAYERS[:4]}: {unplaced}"
    for layer in LAYERS[:4]:
        assert (PACKAGE / layer / "__init__.py").is_file()
        assert ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text())), f"{layer}: say its role"


@pytest.mark.parametrize("module", [m for m in MODULES if _layer(m) is not None])
def test_a_module_imports_no_later_layer(module):
    rank = LAYERS.index(_layer(module))
    for target in _imports(module):
        layer = _layer(target)
        assert layer is not None, f"{module} imports the demos ({target})"
        assert LAYERS.index(layer) <= rank, f"{module} ({LAYERS[rank]}) imports {target} ({layer}), a later layer"


def test_compute_draws_nothing_and_draw_writes_nothing():
    for module in MODULES:
        imported = {_layer(t) for t in _imports(module)}
        if _layer(module) == "_compute":
            assert not imported & {"_draw", "_write"}, module
        if _layer(module) == "_draw":
            assert "_write" not in imported, module
        if _layer(module) == "explorer":
            assert imported <= EXPLORER_IMPORTS, module


def test_no_module_imports_itself_through_others():
    graph, state, path = _graph(), {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in graph.get(module, ()):
            if state.get(target) == "open":
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module)


def test_the_callbacks_never_import_the_demos():
    for module in MODULES:
        if _layer(module) is not None:
            assert not [t for t in _imports(module) if t.startswith("lightning_xai.demos")], module


def test_the_checker_sees_the_imports_it_checks():
    """Guards the test itself: the parser finds the imports that make the layers."""
    assert "lightning_xai._write.picture" in _imports("lightning_xai._write.writers")
    assert "lightning_xai._compute.history" in _imports("lightning_xai._draw.timeline")
    assert "lightning_xai._config.tags" in _imports("lightning_xai.monitor")
    assert {_layer(m) for m in MODULES} >= set(LAYERS) | {None}
