"""The vqpaper command: parameter parsing, notebook lookup, and papermill runs of tiny notebooks."""
import json
import os
import subprocess
import sys

import pytest

from vqpaper import cli, paths

TINY = '''# %% [markdown]
# A throw-away notebook for the CLI tests.

# %% tags=["parameters"]
profile = "ci"
x = 1
sizes = [16]
label = "default"

# %%
import time
from vqpaper import results
started = time.time()

# %%
results.record("fig-cli-test", {"x": x, "twice": 2 * x, "sizes": sizes, "label": label},
               notebook="tiny", params={"x": x, "sizes": sizes}, profile=profile,
               started=started)
'''

FAILING = '''# %% tags=["parameters"]
profile = "ci"

# %%
def boom():
    raise ValueError("the answer is not 42")

boom()
'''


def run_cli(args, build, timeout=180):
    env = dict(os.environ, VQPAPER_BUILD=str(build))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "vqpaper.cli", *args], cwd=paths.ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("text, expected", [
    ("3", 3),
    ("-2", -2),
    ("0.5", 0.5),
    ("1e-3", 0.001),
    ("[0, 1, 2]", [0, 1, 2]),
    ("[16,256]", [16, 256]),
    ("(1, 2)", [1, 2]),
    ("[ema, simvq]", ["ema", "simvq"]),
    ("{'a': 1}", {"a": 1}),
    ("True", True),
    ("false", False),
    ("None", None),
    ("cpu", "cpu"),
    ("'quoted'", "quoted"),
    ("two words", "two words"),
])
def test_parse_value(text, expected):
    value = cli.parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_parse_overrides_rejects_profile_and_bad_names():
    assert cli.parse_overrides([["seeds", "[0, 1]"], ["device", "cuda"]]) == {
        "seeds": [0, 1], "device": "cuda"}
    with pytest.raises(cli.CLIError, match="--profile"):
        cli.parse_overrides([["profile", "paper"]])
    with pytest.raises(cli.CLIError, match="identifier"):
        cli.parse_overrides([["not-a-name", "1"]])


def test_unknown_notebook_lists_the_available_ones(capsys):
    assert cli.main(["run", "does_not_exist"]) == 2
    err = capsys.readouterr().err
    assert "unknown notebook 'does_not_exist'" in err
    assert "available notebooks" in err
    for nb in cli.available_notebooks():
        assert nb.name in err


def test_unknown_profile_names_the_allowed_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "01", "--profile", "gpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'ci'" in err and "'paper'" in err


def test_unknown_parameter_lists_declared_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "BUILD", tmp_path / "build")
    nb = tmp_path / "tiny.py"
    nb.write_text(TINY)
    assert cli.main(["run", str(nb), "-p", "y", "3"]) == 2  # fails before any kernel starts
    err = capsys.readouterr().err
    assert "unknown parameter(s) y" in err and "x, sizes, label" in err


def test_notebook_without_parameters_cell_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "BUILD", tmp_path / "build")
    nb = tmp_path / "plain.py"
    nb.write_text("# %%\nx = 1\n")
    assert cli.main(["run", str(nb)]) == 1
    assert "tagged 'parameters'" in capsys.readouterr().err


@pytest.mark.timeout(240)
def test_run_injects_parameters_and_records(tmp_path):
    nb = tmp_path / "tiny.py"
    nb.write_text(TINY)
    build = tmp_path / "build"
    proc = run_cli(["run", str(nb), "-p", "x", "3", "-p", "sizes", "[16, 256]",
                    "-p", "label", "two words"], build)
    assert proc.returncode == 0, proc.stderr
    assert "tiny:" in proc.stdout and " s (profile ci)" in proc.stdout
    record = json.loads((build / "results" / "fig-cli-test.json").read_text())
    assert record["values"] == {"x": 3, "twice": 6, "sizes": [16, 256], "label": "two words"}
    assert record["params"] == {"x": 3, "sizes": [16, 256]}
    assert record["profile"] == "ci" and record["notebook"] == "tiny"
    assert record["provenance"]["wall_time_s"] >= 0
    assert (build / "executed" / "tiny.ipynb").is_file()
    assert not list((build / "executed").glob("tiny.*.ipynb"))
    assert (build / "jupytext" / "tiny.ipynb").is_file()
    # only the book's own notebooks (notebooks/NN_name.py) are copied into the book
    assert not (cli.BOOK_NOTEBOOKS / "tiny.ipynb").exists()


@pytest.mark.timeout(240)
def test_failing_notebook_exits_nonzero_naming_it(tmp_path):
    nb = tmp_path / "broken_nb.py"
    nb.write_text(FAILING)
    proc = run_cli(["run", str(nb)], tmp_path / "build")
    assert proc.returncode == 1
    assert "notebook broken_nb failed" in proc.stderr
    assert "ValueError: the answer is not 42" in proc.stderr
    assert "Traceback (most recent call last)" not in proc.stderr
    assert (tmp_path / "build" / "executed" / "broken_nb.failed.ipynb").is_file()
    assert not (tmp_path / "build" / "executed" / "broken_nb.ipynb").exists()


def _fake_executed_notebook(name, figure_id, png):
    """An executed notebook as papermill + myst-nb glue leave it, made without a kernel."""
    import base64

    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    code = nbformat.v4.new_code_cell("book.figure(fig, ...)", execution_count=1)
    prefix = "application/papermill.record/"
    code.outputs = [
        nbformat.v4.new_output("display_data", data={
            prefix + "image/png": base64.b64encode(png).decode(),
            prefix + "text/plain": "<IPython.core.display.Image object>"},
            metadata={"scrapbook": {"name": figure_id, "mime_prefix": prefix}}),
        nbformat.v4.new_output("display_data", data={prefix + "text/plain": "'0.981'"},
                               metadata={"scrapbook": {"name": "score", "mime_prefix": prefix}}),
    ]
    text = (f"# {name}\n\n```{{glue:figure}} {figure_id}\n:name: {figure_id}\n\nA caption.\n```\n\n"
            f"As {{numref}}`{figure_id}` shows, the score is {{glue:text}}`score`; "
            "math $\\hat z = t_k$ and {cite}`zhao2024collapse`.")
    nb.cells = [nbformat.v4.new_markdown_cell(text), code]
    return nb


@pytest.mark.slow  # a jupyter-book build: ~30 s
@pytest.mark.timeout(300)
def test_book_config_builds_with_warnings_as_errors(tmp_path):
    """_config.yml, _toc.yml and book/ build with -W -n from executed notebooks only:
    numbered glued figures, {numref}, cross-notebook glue, the provenance table."""
    import shutil

    import matplotlib
    import nbformat

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vqpaper import book, results

    src = tmp_path / "src"
    (src / "book").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(paths.ROOT / name, src / name)
    for path in (paths.ROOT / "book").iterdir():
        if path.suffix in (".md", ".bib"):
            shutil.copy(path, src / "book" / path.name)
    shutil.copytree(paths.ROOT / "book" / "_static", src / "book" / "_static")
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    png = book.figure_png(fig)
    plt.close(fig)
    (src / "book" / "notebooks").mkdir()
    names = [line.split("book/notebooks/")[1].strip()
             for line in (src / "_toc.yml").read_text().splitlines()
             if line.strip().startswith("- file: book/notebooks/")]
    assert len(names) == len(list(paths.NOTEBOOKS.glob("[0-9][0-9]_*.py")))
    for name in names:
        figure_id = "fig-" + name[3:].replace("_", "-")
        nbformat.write(_fake_executed_notebook(name, figure_id, png),
                       src / "book" / "notebooks" / f"{name}.ipynb")
    # the real results page quotes the real notebooks (checked by the real build in
    # test_notebooks.py); here a minimal page exercises cross-notebook glue and numref
    (src / "book" / "results.md").write_text("# Results\n")
    with (src / "book" / "results.md").open("a") as fh:
        fh.write(f"\n\nScore {{glue:text}}`notebooks/{names[1]}.ipynb::score:s`, "
                 f"see {{numref}}`fig-{names[1][3:].replace('_', '-')}`.\n")
    build = tmp_path / "build"
    results.record("fig-book-test", {"v": 1.0}, notebook=names[0], params={"a": 1},
                   profile="ci", directory=build / "results")

    env = dict(os.environ, VQPAPER_BUILD=str(build))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.ROOT), env.get("PYTHONPATH")) if p)
    script = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]
    proc = subprocess.run(script + ["build", str(src), "--builder", "html", "-W", "-n",
                                    "--keep-going"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = src / "_build" / "html" / "book"
    page = (html / "notebooks" / f"{names[1]}.html").read_text()
    assert "Fig. 2" in page and "0.981" in page
    assert "_static/mathjax/tex-chtml.js" in page and "cdn.jsdelivr" not in page
    summary = (html / "results.html").read_text()
    assert "0.981" in summary and "Fig. 2" in summary
    assert "fig-book-test" in (html / "provenance.html").read_text()


def test_run_notebooks_returns_each_outcome_as_data(tmp_path, monkeypatch):
    """`vqpaper book`'s executor: a failure comes back as an Outcome naming the cell and the error."""
    from vqpaper import runner

    (tmp_path / "98_ok.py").write_text(TINY)
    (tmp_path / "99_fail.py").write_text(FAILING)
    monkeypatch.setattr(paths, "BUILD", tmp_path / "build")
    env = dict(os.environ, VQPAPER_BUILD=str(tmp_path / "build"))
    seen = []
    outcomes = runner.run_notebooks([tmp_path / "98_ok.py", tmp_path / "99_fail.py"], "ci", [["x", "3"]],
                                    jobs=2, env=env, on_done=seen.append)
    by_name = {o.name: o for o in outcomes}
    assert sorted(by_name) == ["98_ok", "99_fail"] and len(seen) == 2
    assert by_name["98_ok"].ok and not by_name["98_ok"].error
    bad = by_name["99_fail"]
    assert not bad.ok and "ValueError: the answer is not 42" in bad.error and "In [" in bad.error
    assert json.loads((tmp_path / "build" / "results" / "fig-cli-test.json").read_text())["values"]["x"] == 3
