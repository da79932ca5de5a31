"""The documentation site builds, covers the public API and has no broken internal link.

The site is built once per module, from a copy of ``docs/`` into ``tmp_path`` (the API pages are
generated into the copy), with ``-W --keep-going -n`` as ``scripts/docs`` does. The build's warnings are
one test; the pages, links and the method table are checked on whatever HTML it wrote, so a docstring
warning does not hide a broken link.  The prose is checked against the repository without a build: the
paths it names exist, the architecture page names every module, the README's links resolve, and the code
of two pages runs.
"""

import os
import re
import runpy
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("myst_parser", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("furo", reason="the docs extra is not installed: pip install -e '.[docs]'")

pytestmark = pytest.mark.slow  # a Sphinx build and subprocesses

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
from api_pages import page_of  # noqa: E402
from public_api import MODULES, public_names  # noqa: E402

sys.path.remove(str(DOCS / "_ext"))


class _Page(HTMLParser):
    """The ids, the links (``a``/``link`` href, ``img``/``script`` src) and the method table's rows of one
    HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.table_rows: list[str] = []
        self._in_method_table = self._in_body = self._in_first_cell = False
        self._cell = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag in ("a", "link") and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("img", "script") and attrs.get("src"):
            self.links.append(attrs["src"])
        if tag == "table" and "method-table" in (attrs.get("class") or "").split():
            self._in_method_table = True
        elif self._in_method_table and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self._in_first_cell, self._cell = None, ""
        elif self._in_body and tag == "td" and self._in_first_cell is None:
            self._in_first_cell = True

    def handle_endtag(self, tag):
        if self._in_body and tag == "td" and self._in_first_cell:
            self.table_rows.append(self._cell.strip())
            self._in_first_cell = False
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._in_method_table = False

    def handle_data(self, data):
        if self._in_first_cell:
            self._cell += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site once: (html directory, {path: parsed page}, the build's result)."""
    build = tmp_path_factory.mktemp("docs")
    source = build / "source"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build", "api"))
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q"]
    command += ["-d", str(build / "doctrees"), "-w", str(build / "warnings.txt"), str(source), str(build / "html")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=build)
    html = build / "html"
    if not (html / "index.html").exists():
        pytest.fail(f"the docs build wrote no site:\n{result.stderr[-5000:]}")
    pages = {path: _parse(path) for path in html.rglob("*.html")}
    return html, pages, result, (build / "warnings.txt").read_text()


def test_the_build_has_no_warnings(site):
    _, _, result, warnings = site
    assert result.returncode == 0 and not warnings.strip(), (
        f"{len(warnings.splitlines())} warning lines (scripts/docs fails on them):\n{warnings[:20000]}"
    )


@pytest.mark.parametrize("modname", MODULES)
def test_every_documented_module_has_a_page_and_public_names(site, modname):
    html, pages, _, _ = site
    page = html / f"{page_of(modname)}.html"
    assert page.exists(), f"no page for {modname}"
    assert [n for n in public_names() if n.module == modname], f"{modname} has no public names"


def test_every_public_name_has_its_own_page(site):
    html, pages, _, _ = site
    missing, without_anchor = [], []
    for public in public_names():
        if public.alias_of:  # documented on the page of the name it stands for, linked from its module's page
            module_page = pages[html / f"{page_of(public.module)}.html"]
            target = os.path.relpath(f"{page_of(public.alias_of)}.html", Path(page_of(public.module)).parent)
            assert any(link.split("#")[0] == target for link in module_page.links), public.path
            continue
        page = html / f"{page_of(public.path)}.html"
        if not page.exists():
            missing.append(public.path)
        elif public.path not in pages[page].ids:
            without_anchor.append(public.path)
    assert not missing, f"public names without a page: {missing}"
    assert not without_anchor, f"pages that do not document their name (no #{{path}} anchor): {without_anchor}"


def test_every_internal_link_and_anchor_resolves(site):
    html, pages, _, _ = site
    broken = []
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(html)}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{path.relative_to(html)}: {link} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken[:100])


def test_the_method_table_has_one_row_per_registered_method(site):
    html, pages, _, _ = site
    from attribution import registry

    assert pages[html / "methods.html"].table_rows == registry.available()


def test_every_page_is_in_the_navigation(site):
    html, pages, _, _ = site
    sidebar = pages[html / "index.html"].links
    for doc in sorted(DOCS.rglob("*.md")):
        if "_build" in doc.parts or doc == DOCS / "index.md":
            continue
        name = doc.relative_to(DOCS).with_suffix(".html").as_posix()
        assert name in sidebar, f"{name} is not linked from the index's navigation"


def _python_blocks(page: str) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S))


def test_the_add_a_method_how_to_runs(tmp_path):
    """The how-to's code after the class it shows (``examples/custom_cam.py``, which the page includes), in a
    process of its own (it registers a method)."""
    pytest.importorskip("torchvision")
    example = ROOT / "examples" / "custom_cam.py"
    assert "{literalinclude} ../../examples/custom_cam.py" in (DOCS / "howto" / "add-a-method.md").read_text()
    script = tmp_path / "add_a_method.py"
    setup = f"import runpy\nglobals().update(runpy.run_path({str(example)!r}, run_name='custom_cam'))\n"
    script.write_text(setup + _python_blocks("howto/add-a-method.md") + "\nprint(tuple(heat.shape))\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    assert result.stdout.strip().endswith("(2, 1, 64, 64)")


def test_the_add_a_method_how_to_shows_the_example_class(site):
    html, pages, _, _ = site
    page = (html / "howto" / "add-a-method.html").read_text()
    text = re.sub(r"<[^>]+>", "", page)
    assert '@register("layer_xgrad_cam")' in text.replace("&quot;", '"')
    assert "class LayerXGradCam(LayerGradCam):" in text and "def channel_weights(" in text


_REPO_PATH = re.compile(r"`((?:attribution|lightning_xai|tests|examples|benchmarks|scripts|docs)/[\w./-]*(?:\.\w+|/))`")


def test_every_repository_path_the_pages_name_exists():
    """Files and folders the prose names by path (``attribution/_internal/rules.py``) exist, so a move is
    caught here; the architecture page's table of where files went names the old paths on purpose."""
    missing = []
    for page in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]:
        if "_build" in page.parts or "api" in page.relative_to(ROOT).parts[1:2]:
            continue
        text = page.read_text().split("## Where did X go")[0]
        missing += [
            f"{page.relative_to(ROOT)}: {path}" for path in _REPO_PATH.findall(text) if not (ROOT / path).exists()
        ]
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_the_architecture_page_names_every_module_and_folder():
    """``ls`` and the folder map tell the same story: every module and folder of both packages is on the page."""
    page = (DOCS / "architecture.md").read_text().split("## Where did X go")[0]
    words = set(re.findall(r"[\w.]+/?", page))
    unnamed = []
    for package in ("attribution", "lightning_xai"):
        for path in sorted((ROOT / package).rglob("*")):
            if "__pycache__" in path.parts or path.name in ("__init__.py", "py.typed"):
                continue
            name = f"{path.name}/" if path.is_dir() else path.name
            if name not in words:
                unnamed.append(path.relative_to(ROOT).as_posix())
    assert not unnamed, f"docs/architecture.md does not name: {unnamed}"


def test_the_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", readme):
        parts = urlsplit(link)
        if parts.scheme or link.startswith("#"):
            continue
        if not (ROOT / unquote(parts.path)).exists():
            broken.append(link)
    assert not broken, f"README links to missing files: {broken}"


def test_the_getting_started_model_trains_with_the_monitor(tmp_path):
    """The getting-started code, its model and data on a short fit (the page's own run takes a minute)."""
    script = tmp_path / "quickstart.py"
    script.write_text(_python_blocks("getting-started.md"))
    namespace = runpy.run_path(str(script))  # not as __main__: no fit of its own
    import lightning as L
    from torch.utils.data import DataLoader

    from lightning_xai import AttributionMonitor

    monitor = AttributionMonitor(methods=["integrated_gradients", "occlusion"], class_names=namespace["QUADRANTS"])
    trainer = L.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    train = DataLoader(namespace["bright_squares"](128, seed=0), batch_size=64)
    val = DataLoader(namespace["bright_squares"](64, seed=1), batch_size=64)
    trainer.fit(namespace["SmallCNN"](), train, val)
    assert (tmp_path / "xai" / "manifest.json").exists()
