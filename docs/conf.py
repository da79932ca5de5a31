"""Sphinx configuration of the lightning-xai site (``scripts/docs`` builds it; see about.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))  # the local extensions

project = "lightning-xai"
author = "lightning-xai contributors"
copyright = "lightning-xai contributors"
release = version = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.autosummary",
    "docstrings",  # napoleon read the way this project writes docstrings
    "api_pages",  # a page per public name, from __all__
    "api_links",  # `attribution.X` in prose links to X's page
    "method_table",  # the {method-table} directive: the registry as a table
    "external_refs",  # torch, Lightning and Python names link to their documentation, without network
    "repo_files",  # literalinclude of repository files (examples/) from the copy of docs/ the build reads
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# Markdown (MyST): heading anchors so links like howto/loggers.md#w-b work here as on GitHub.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc + napoleon: the docstrings are Google style with Sphinx roles.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autosummary_generate = False  # api_pages writes the pages
python_use_unqualified_type_names = True
add_module_names = False

nitpicky = True

html_theme = "furo"
html_title = "lightning-xai"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"sidebar_hide_name": False, "navigation_with_keys": True}
