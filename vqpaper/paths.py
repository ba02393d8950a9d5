"""One place for paths: the build folders every notebook and command writes to."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("VQPAPER_BUILD", ROOT / "_build")).resolve()
RESULTS = BUILD / "results"
FIGURES = BUILD / "figures"
EXECUTED = BUILD / "executed"
CACHE = Path(os.environ.get("VQPAPER_CACHE", BUILD / "cache")).resolve()
NOTEBOOKS = ROOT / "notebooks"
REFERENCES = ROOT / "tests" / "references"
