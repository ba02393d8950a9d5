"""One place for paths: the build folders every notebook and command writes to, and figure ids."""
import re
from pathlib import Path

from .errors import ConfigError
from .settings import settings

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(settings().build or ROOT / "_build").resolve()
RESULTS = BUILD / "results"
FIGURES = BUILD / "figures"
EXECUTED = BUILD / "executed"
CACHE = Path(settings().cache or BUILD / "cache").resolve()
NOTEBOOKS = ROOT / "notebooks"
REFERENCES = ROOT / "tests" / "references"

#: A figure's stable id (SPEC: file name, MyST ``name:``, key of its recorded numbers).
FIGURE_ID = re.compile(r"^fig-[a-z0-9-]+$")


def check_figure_id(figure_id) -> str:
    """``figure_id`` if it looks like ``fig-tokens-collapse-synthetic``, else a ConfigError saying so."""
    if not isinstance(figure_id, str) or not FIGURE_ID.match(figure_id):
        raise ConfigError(f"figure_id {figure_id!r} is not allowed: use 'fig-' then lowercase letters, digits "
                         "and hyphens, e.g. 'fig-tokens-collapse-synthetic'")
    return figure_id
