"""Where the published book points: the repository behind its Colab and Binder launch buttons.

Jupyter Book 1 draws a notebook page's launch buttons from two settings of ``_config.yml``:
``launch_buttons`` (which services: committed, Colab and Binder) and ``repository`` (which
repository and branch they open). The repository URL is one setting, left empty in the committed
``_config.yml`` and filled at build time from the ``origin`` git remote when that is a GitHub
repository (https, ``ssh://`` or ``git@github.com:`` form), because the same checkout is built on
a fork, in CI and on a laptop without any remote. Without one there is nothing to point at: the
build says so in one line and draws no launch buttons. It must not leave them half set:
sphinx-book-theme 1.3 then fails the build on the first notebook page (an empty URL), or points
them at Jupyter Book's own repository (no ``repository`` key: its default).

The buttons open ``<branch>/<page>.ipynb``; the executed notebooks are build outputs (git-ignored
on ``main``), so ``.github/workflows/book.yml`` pushes them to the branch named in
``_config.yml`` (:func:`launch_branch`) with the tree they were built from.

Used by the book build (``site_config_overrides``: the ``_config.yml`` overrides and the line to
print) and by :mod:`vqpaper.sphinxext` (``launch_theme_options``: the same decision for a book
built by ``jupyter-book`` directly, from the committed ``_config.yml``).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Optional

import yaml

#: ``launch_buttons`` keys that name a service; a launch button needs a repository URL.
LAUNCH_SERVICES = ("binderhub_url", "colab_url", "jupyterhub_url", "deepnote_url", "jupyterlite_url")

# The forms ``git remote get-url origin`` gives for a github.com repository. Colab opens notebooks
# from github.com only, so GitHub Enterprise hosts and other forges count as "not GitHub".
_GITHUB_REMOTE = re.compile(
    r"""^(?:
          (?:https?|ssh|git|git\+ssh)://(?:[^@/]+@)?(?:www\.)?github\.com(?::\d+)?/  # https://[user[:token]@]github.com/, ssh://git@github.com[:22]/
        | [^@/:\s]+@github\.com:                                                     # git@github.com: (scp-like ssh)
        )
        (?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)
        /(?P<repo>[A-Za-z0-9._-]+?)(?:\.git)?/?$""",
    re.VERBOSE | re.IGNORECASE,
)
_CREDENTIALS = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)[^@/]+@", re.IGNORECASE)


def github_repository(remote: Optional[str]) -> Optional[str]:
    """``https://github.com/OWNER/REPO`` for a git remote URL of a github.com repository, else None.

    Credentials in the remote (``https://user:token@github.com/...``) are dropped: the result is
    printed in the site.
    """
    if not remote:
        return None
    match = _GITHUB_REMOTE.match(remote.strip())
    if match is None or match["repo"] in (".", ".."):
        return None
    return f"https://github.com/{match['owner']}/{match['repo']}"


def origin_remote(root) -> Optional[str]:
    """The URL of the ``origin`` remote of the git checkout holding ``root``, or None (no git, not a
    checkout, no ``origin``)."""
    try:
        proc = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # git missing or hanging: no remote to point at
        return None
    url = proc.stdout.strip()
    return url if proc.returncode == 0 and url else None


def repository_url(root) -> Optional[str]:
    """The GitHub repository the launch buttons open: ``origin``'s, when it is on github.com."""
    return github_repository(origin_remote(root))


def _without_credentials(remote: str) -> str:
    return _CREDENTIALS.sub(r"\g<scheme>", remote)


def site_config_overrides(root) -> tuple[dict, str]:
    """``(overrides of _config.yml, one line for the build's output)`` for the checkout at ``root``.

    With a GitHub ``origin``: ``{"repository": {"url": "https://github.com/OWNER/REPO"}}``.
    Without: an empty URL and every launch service switched off, so that no button is drawn and
    the build does not fail; the line says why and how to get the buttons.
    """
    remote = origin_remote(root)
    url = github_repository(remote)
    if url is not None:
        return {"repository": {"url": url}}, f"launch buttons (Colab, Binder) open notebooks of {url}"
    if remote is None:
        why = "this checkout has no `origin` git remote to point them at"
    else:
        why = (f"the `origin` remote {_without_credentials(remote)} is not a github.com repository "
               "(Colab opens notebooks from GitHub only)")
    off = {key: "" for key in LAUNCH_SERVICES}
    off["thebe"] = False  # Thebe starts a Binder of the repository too
    return ({"repository": {"url": ""}, "launch_buttons": off},
            f"no launch buttons: {why}; `git remote add origin https://github.com/OWNER/REPO` adds them")


def merge_config(config: dict, overrides: dict) -> dict:
    """``config`` with ``overrides`` merged in, key by key for nested mappings (neither is changed)."""
    out = dict(config)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def launch_theme_options(theme_options: dict, root) -> tuple[dict, Optional[str]]:
    """The Sphinx ``html_theme_options`` Jupyter Book made from ``_config.yml``, with the repository
    filled from ``root``'s ``origin`` (:func:`site_config_overrides`) when launch buttons are
    configured and no URL is set yet; ``(options, None)`` unchanged otherwise (the build already
    applied the overrides, or nothing is launched)."""
    launch = theme_options.get("launch_buttons") or {}
    wanted = any(launch.get(key) for key in LAUNCH_SERVICES) or bool(launch.get("thebe"))
    if theme_options.get("repository_url") or not wanted:
        return theme_options, None
    overrides, message = site_config_overrides(root)
    # jupyter_book.config.yaml_to_sphinx maps repository.url to repository_url; launch_buttons as is
    options = dict(theme_options, repository_url=overrides["repository"]["url"])
    if "launch_buttons" in overrides:
        options["launch_buttons"] = dict(launch, **overrides["launch_buttons"])
    return options, message


def launch_branch(root) -> str:
    """The branch the launch buttons open (``repository.branch`` of ``root/_config.yml``), where
    ``.github/workflows/book.yml`` pushes the executed notebooks."""
    path = Path(root) / "_config.yml"
    branch = ((yaml.safe_load(path.read_text()) or {}).get("repository") or {}).get("branch")
    if not isinstance(branch, str) or not branch.strip():
        raise ValueError(f"{path}: repository.branch must name the branch the launch buttons open "
                         f"(e.g. 'launch'), got {branch!r}")
    return branch.strip()


# ------------------------------------------------------------------ the first cell of a launched notebook

#: The first cell of every executed notebook (``vqpaper.runner.convert`` inserts it, tagged
#: ``remove-cell``: the book's page does not show it). A notebook opened by a launch button runs where
#: ``vqpaper`` may be missing (Colab; Binder installs it from environment.yml): the cell then clones the
#: tree the page was built from (the launch branch) and installs it. The repository is not typed in
#: any notebook: the build fills it in from :func:`repository_url` and :func:`launch_branch`.
INSTALL_CELL = '''\
# Opened from the book's launch buttons (Colab, Binder)? Then vqpaper may be missing: this cell gets
# the tree this page was built from (branch {branch_name} of the repository below) and installs it. It does
# nothing where `import vqpaper` works. The book's build wrote the repository from its `origin` git
# remote (vqpaper/publish.py); set the environment variable VQPAPER_REPOSITORY to use another (a fork).
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("vqpaper") is None:
    repository = os.environ.get("VQPAPER_REPOSITORY") or {url}
    if not repository:
        raise RuntimeError("vqpaper is not installed, and this book was built without a GitHub repository to get it "
                           "from: set os.environ['VQPAPER_REPOSITORY'] = 'https://github.com/OWNER/REPO', then run "
                           "this cell again")
    checkout = os.path.abspath("vqpaper-checkout")
    if not os.path.isdir(checkout):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", {branch}, repository, checkout],
                       check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", checkout], check=True)
    sys.path.insert(0, checkout)  # this kernel started before the install
    os.chdir(checkout)  # `vqpaper run` and `vqpaper plan` look for notebooks/ beside the package
'''


def install_cell(root) -> str:
    """The source of :data:`INSTALL_CELL` for the checkout at ``root``: its GitHub repository (None without
    one: the cell then asks for ``VQPAPER_REPOSITORY``) and its launch branch."""
    branch = launch_branch(root)
    return INSTALL_CELL.format(url=repr(repository_url(root) or ""), branch=repr(branch), branch_name=branch)
