"""One place for paths: the build folders every notebook and command writes to, and figure ids."""
import re
from pathlib import Path

from .errors import ConfigError
from .settings import settings

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(settings().build or ROOT / "_build").resolve()
#: A notebook's kernel started by ``vqpaper.runner`` writes its results and figures into this
#: staging folder (``VQPAPER_STAGE``); the runner moves them into BUILD only when the whole
#: notebook succeeded, so a failed run leaves the last good results and pages as they were.
STAGE = Path(settings().stage).resolve() if settings().stage else None
RESULTS = (STAGE or BUILD) / "results"
FIGURES = (STAGE or BUILD) / "figures"
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
