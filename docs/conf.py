"""Sphinx configuration of the mixvi documentation site.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (with the ``[docs]`` extra).
``MIXVI_DOCS_QUICK=1`` runs the gallery examples with few steps and short NUTS chains (what CI does);
``-D plot_gallery=0`` skips running them altogether.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the package and examples/ import from the checkout, installed or not

import mixvi  # noqa: E402

QUICK = os.environ.get("MIXVI_DOCS_QUICK", "0") not in ("", "0")

project = "mixvi"
author = "mixvi contributors"
copyright = "mixvi contributors"
release = mixvi.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "**.json",
    "**.ipynb",
    "**.py",
    "auto_examples/*.md5",
    "sg_execution_times.rst",
    "Thumbs.db",
    ".DS_Store",
]
# unlabelled code blocks in the pages are diagrams and formulas, not Python
highlight_language = "text"

# --- MyST -------------------------------------------------------------------------------------
myst_heading_anchors = 4  # [text](theory.md#some-heading) links between pages
myst_enable_extensions = ["colon_fence", "deflist"]

# --- autodoc / napoleon -----------------------------------------------------------------------
# every object is documented once, in the module that defines it (ignore-module-all: a module's __all__
# re-exports, e.g. mixvi.optim.AutoStep from mixvi.geometry, are not documented a second time)
autodoc_default_options = {"members": True, "member-order": "bysource", "ignore-module-all": True}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"
autosummary_generate = False  # summary tables only; the module pages hold the entries
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True
# type hints mention jax / numpyro / numpy names that no page documents: without intersphinx (no network in
# CI) these cross-references cannot resolve, which is expected, not a defect of the docs
nitpicky = False
suppress_warnings = ["config.cache"]

# --- sphinx-gallery ---------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    # _compare.py (the helpers the scripts share) is imported by them, not an example of its own
    "ignore_pattern": r"__init__\.py|(^|/)_[^/]*\.py$",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
    "write_computation_times": False,
    "show_memory": False,
    "reset_modules": ("matplotlib",),
}

# --- HTML -------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"mixvi {release}"
html_static_path: list[str] = []  # no custom static files (an empty folder would not survive a clone)
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
html_copy_source = False


# --- the API index: the public names, generated ---------------------------------------------------
# api/index.rst holds a marker; the tables that replace it list ``mixvi.__all__``, each name under the
# module that defines it (where its entry is), so a name that moves between modules keeps its link.
# The functional core (mixvi/vi.py) heads the page. In a checkout without mixvi/vi.py or
# mixvi/geometry.py yet their pages say so instead of failing the -W build on an import error.
CORE = ("mixture_vi", "MixtureVI", "MixtureVIState", "MixtureVIInfo")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


PENDING = {mod: f"api/{mod.rsplit('.', 1)[1]}" for mod in ("mixvi.vi", "mixvi.geometry") if not _importable(mod)}


def _target(name: str) -> str:
    obj = getattr(mixvi, name)
    if isinstance(obj, type(mixvi)):
        return obj.__name__
    return f"{obj.__module__}.{obj.__qualname__}"


def _table(title: str, names: list[str]) -> str:
    rows = "".join(f"   ~{_target(n)}\n" for n in names)
    return f"{title}\n{'-' * len(title)}\n\n.. autosummary::\n   :nosignatures:\n\n{rows}\n"


def _public_names() -> str:
    public = list(mixvi.__all__)
    core = [n for n in CORE if n in public]
    if core:
        head = _table("Functional core", core)
    else:
        head = (
            "Functional core\n---------------\n\n.. note::\n\n   ``mixvi.vi`` (``mixture_vi``, ``MixtureVI``, "
            "``MixtureVIState``, ``MixtureVIInfo``) is not in this checkout yet; its entries appear here "
            "once the module exists.\n\n"
        )
    return head + _table("Top-level names", [n for n in public if n not in CORE])


def _generated_sources(app, docname: str, source: list[str]) -> None:
    text = source[0]
    if docname == "api/index":
        marker = text.index(".. mixvi-public-names")
        end = text.index("Modules\n-------")
        text = text[:marker] + _public_names() + text[end:]
    for mod, page in PENDING.items():
        if docname == page:
            title = text.splitlines()[0]
            text = f"{title}\n{'=' * len(title)}\n\n.. note::\n\n   ``{mod}`` is not in this checkout yet.\n"
    source[0] = text


def setup(app):
    app.connect("source-read", _generated_sources)
