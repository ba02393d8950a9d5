"""The vqpaper command: parameter parsing, notebook lookup, and papermill runs of tiny notebooks."""
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from vqpaper import cli, config, paths, runner

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
    env.pop("VQPAPER_CACHE", None)  # the build folder's own cache: cold
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
    """`-p` text has one parser, on the config floor; the command line passes text."""
    value = config.parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_prepare_refuses_profile_and_bad_names_before_any_kernel(tmp_path):
    nb = tmp_path / "tiny.py"
    nb.write_text(TINY)
    job = runner.prepare(nb, "ci", {"sizes": "[0, 1]", "label": "cuda"}, build=tmp_path / "build")
    assert job.parameters == {"sizes": [0, 1], "label": "cuda"} and job.name == "tiny"
    with pytest.raises(runner.RunnerError, match="--profile"):
        runner.prepare(nb, "ci", {"profile": "paper"}, build=tmp_path / "build")
    with pytest.raises(runner.RunnerError, match="identifier"):
        runner.prepare(nb, "ci", {"not-a-name": "1"}, build=tmp_path / "build")


def test_book_notebook_values_are_checked_before_any_kernel(tmp_path, monkeypatch, capsys):
    """A wrong type is reported by config at once, naming the parameter (no kernel start)."""
    monkeypatch.setattr(paths, "BUILD", tmp_path / "build")
    started = time.perf_counter()
    assert cli.main(["run", "03", "-p", "codebook_sizes", "16"]) == 2
    err = capsys.readouterr().err
    assert "ConfigError" in err and "codebook_sizes" in err and "must be a list" in err, err
    assert time.perf_counter() - started < 30
    with pytest.raises(runner.RunnerError, match="device"):
        runner.prepare("02", "ci", {"device": "tpu"}, build=tmp_path / "build")


def test_run_help_lists_the_notebooks_parameters(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "02", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "parameters of 02_tokens_collapse_synthetic" in out
    rows = {line.split()[0]: line for line in out.split("parameters of")[1].splitlines()[1:]
            if line.strip() and not line.strip().startswith("ci:")}
    for name in ("dims", "token_dims", "seeds"):
        assert name in rows, out
    assert "data dimensions" in rows["dims"]
    seeds = {profile: config.PRESETS["02_tokens_collapse_synthetic"][profile].seeds for profile in ("ci", "paper")}
    assert f"ci: {seeds['ci']}   paper: {seeds['paper']}   allowed: a list of integers >= 0" in out
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])  # no notebook: the plain help
    assert "parameters of" not in capsys.readouterr().out


def test_unknown_notebook_lists_the_available_ones(capsys):
    assert cli.main(["run", "does_not_exist"]) == 2
    err = capsys.readouterr().err
    assert "unknown notebook 'does_not_exist'" in err
    assert "available notebooks" in err
    for nb in runner.available_notebooks():
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
    assert (build / "logs" / "tiny.log").read_text().rstrip().endswith(" s"), "the log ends with the outcome"
    assert not (paths.ROOT / "book" / "notebooks").exists(), "the source tree is never written"


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


RECORDS_THEN_FAILS = '''# %% tags=["parameters"]
profile = "ci"
x = 1
figure = "fig-cli-test"
fail = False

# %%
from vqpaper import plots, results
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
plots.save_figure(fig, figure)
results.record(figure, {"x": x}, notebook="stages", profile=profile)

# %%
if fail:
    raise ValueError("asked to fail after recording")
'''


def _run(nb, build, **texts):
    job = runner.prepare(nb, "ci", texts, build=build)
    [outcome] = runner.run_notebooks([job], workers=1, out=io.StringIO())
    return outcome


@pytest.mark.slow  # three kernels: ~30 s
@pytest.mark.timeout(300)
def test_a_failed_run_leaves_the_last_good_results_and_page(tmp_path):
    """Results and figures wait in a staging folder until every cell ran; a success removes stale ones."""
    nb, build = tmp_path / "stages.py", tmp_path / "build"
    nb.write_text(RECORDS_THEN_FAILS)
    assert _run(nb, build, x="1").ok
    page, result = build / "executed" / "stages.ipynb", build / "results" / "fig-cli-test.json"
    before = {p: p.read_bytes() for p in (page, result, build / "figures" / "fig-cli-test.png")}

    outcome = _run(nb, build, x="2", fail="True")
    assert not outcome.ok and "asked to fail after recording" in outcome.error
    assert {p: p.read_bytes() for p in before} == before, "a failed run changed the last good outputs"
    assert (build / "executed" / "stages.failed.ipynb").is_file() and not (build / "staging").exists()
    assert "ValueError: asked to fail after recording" in (build / "logs" / "stages.log").read_text()

    assert _run(nb, build, x="3", figure="fig-cli-other").ok
    assert not result.exists() and not (build / "figures" / "fig-cli-test.png").exists(), "stale outputs stayed"
    assert json.loads((build / "results" / "fig-cli-other.json").read_text())["values"] == {"x": 3}
    assert page.read_bytes() != before[page] and not (build / "executed" / "stages.failed.ipynb").exists()


def test_site_is_staged_under_the_build_folder_with_config_overrides(tmp_path):
    """The book's source and its executed notebooks go to BUILD/site; overrides merge into _config.yml."""
    import yaml

    build = tmp_path / "build"
    with pytest.raises(runner.RunnerError, match="no executed notebook"):
        runner.stage_site(build)
    names = runner.book_notebooks()
    assert names == [nb.stem for nb in runner.available_notebooks()]
    (build / "executed").mkdir(parents=True)
    for name in names:
        (build / "executed" / f"{name}.ipynb").write_text("{}")
    site = runner.stage_site(build, {"html": {"use_repository_button": True}, "repository": {"url": "https://x/y"}})
    assert site == build / "site"
    cfg = yaml.safe_load((site / "_config.yml").read_text())
    source = yaml.safe_load((paths.ROOT / "_config.yml").read_text())
    assert cfg["html"]["use_repository_button"] is True and cfg["repository"]["url"] == "https://x/y"
    assert cfg["html"]["home_page_in_navbar"] == source["html"]["home_page_in_navbar"], "a deep merge"
    assert cfg["sphinx"]["local_extensions"] == {"vqpaper.sphinxext": str(paths.ROOT)}
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert (site / "_toc.yml").read_text() == (paths.ROOT / "_toc.yml").read_text()
    for page in ("intro.md", "results.md", "references.bib", "_static"):
        assert (site / "book" / page).exists()
    assert sorted(p.stem for p in (site / "book" / "notebooks").glob("*.ipynb")) == names


@pytest.mark.slow  # a jupyter-book build: ~30 s
@pytest.mark.timeout(300)
def test_book_config_builds_with_warnings_as_errors(tmp_path, monkeypatch):
    """_config.yml, _toc.yml and book/ build with -W -n from executed notebooks only, staged under the
    build folder: numbered glued figures, {numref}, cross-notebook glue, the provenance table."""
    import matplotlib
    import nbformat

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vqpaper import book, plots, results

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    png = book.figure_png(fig)
    plt.close(fig)
    build = tmp_path / "build"
    (build / "executed").mkdir(parents=True)
    names = runner.book_notebooks()
    for name in names:
        figure_id = "fig-" + name[3:].replace("_", "-")
        nbformat.write(_fake_executed_notebook(name, figure_id, png), build / "executed" / f"{name}.ipynb")
    results.record("fig-book-test", {"v": 1.0}, notebook=names[0], params={"a": 1},
                   profile="ci", directory=build / "results")
    # the data behind one figure (its caption links them) and recorded claims (the results page's tables)
    shown = "fig-" + names[1][3:].replace("_", "-")
    results.record(shown, {"v": 2.0}, notebook=names[1], params={}, profile="ci", directory=build / "results")
    plots.save_data(plots.plot_sweep([{"k": k, "mse": 1 / k} for k in (2, 4)], x="k", ys="mse"), shown,
                    directory=build / "figures")
    check = {"id": "c", "setting": "2-D", "outcome": "held", "reason": "r", "effect": 0.5, "low": 0.2, "high": 0.8,
             "n": 3, "sd": 0.1, "n_80": 3, "n_95": 4, "decision": "positive"}
    claims = {fid: {"id": fid, "source": source, "paper": "a claim", "outcome": outcome, "verdict": outcome,
                    "checks": {f"{fid}-c": {**check, "id": f"{fid}-c", "outcome": outcome}}}
              for fid, source, outcome in (("p-one", "§3.1.1, Fig. 3", "held"),
                                           ("p-two", "§3.2", "inconclusive"), ("q", "companion question", "held"))}
    results.record("fig-book-claims", claims, notebook=names[1], params={}, profile="ci", directory=build / "results")
    def source_tree():
        return sorted(p.name for p in paths.ROOT.iterdir()) + sorted(str(p) for p in (paths.ROOT / "book").rglob("*"))

    source_before = source_tree()
    # the real results page quotes the real notebooks (checked by the real build in test_notebooks.py):
    # here the staged copy gets a minimal one that exercises cross-notebook glue and numref
    real_stage = runner.stage_site

    def stage(build_, overrides=None):
        site = real_stage(build_, overrides)
        (site / "book" / "results.md").write_text(
            f"# Results\n\nScore {{glue:text}}`notebooks/{names[1]}.ipynb::score:s`, "
            f"see {{numref}}`fig-{names[1][3:].replace('_', '-')}`.\n\n"
            + "".join(f"```{{vqpaper-claims}}\n:show: {show}\n```\n\n" for show in ("count", "overview", "power",
                                                                                  "parameters")))
        return site

    monkeypatch.setattr(runner, "stage_site", stage)
    assert runner.build_book(build, {"title": "A staged title"}) == 0
    html = build / "html" / "book"
    page = (html / "notebooks" / f"{names[1]}.html").read_text()
    assert "Fig. 2" in page and "0.981" in page and "A staged title" in page
    assert "_static/mathjax/tex-chtml.js" in page and "cdn.jsdelivr" not in page
    summary = (html / "results.html").read_text()
    assert "0.981" in summary and "Fig. 2" in summary
    assert "1 of 2 claims of the paper held, 0 not held, 1 inconclusive." in summary
    assert '<tr class="vqpaper-held' in summary and '<tr class="vqpaper-inconclusive' in summary
    assert "vqpaper-power" in summary and "Every notebook ran with the parameters of the ci profile" in summary
    links = re.findall(r'href="([^"]+)"[^>]*>(JSON|CSV|PNG)</a>', page)
    assert [label for _, label in links] == ["JSON", "CSV"], links  # no PNG was saved for it
    for href, _ in links:
        assert (html / "notebooks" / href).resolve().is_file(), href
    assert "fig-book-test" in (html / "provenance.html").read_text()
    assert source_tree() == source_before, "the build wrote into the source tree"


@pytest.mark.timeout(240)
def test_run_notebooks_returns_each_outcome_as_data(tmp_path):
    """`vqpaper book`'s executor: a failure comes back as an Outcome naming the cell and the error."""
    (tmp_path / "98_ok.py").write_text(TINY)
    (tmp_path / "99_fail.py").write_text(FAILING)
    build = tmp_path / "build"
    jobs = runner.prepare_book([tmp_path / "98_ok.py", tmp_path / "99_fail.py"], "ci", {"x": "3"}, build=build)
    seen, out = [], io.StringIO()
    outcomes = runner.run_notebooks(jobs, workers=2, on_done=seen.append, out=out)
    by_name = {o.name: o for o in outcomes}
    assert sorted(by_name) == ["98_ok", "99_fail"] and len(seen) == 2
    assert by_name["98_ok"].ok and not by_name["98_ok"].error
    bad = by_name["99_fail"]
    assert not bad.ok and "ValueError: the answer is not 42" in bad.error and "In [" in bad.error
    assert json.loads((build / "results" / "fig-cli-test.json").read_text())["values"]["x"] == 3
    assert "ok    98_ok" in out.getvalue() and "FAIL  99_fail" in out.getvalue()


@pytest.mark.notebooks
@pytest.mark.after_book  # it checks that the default build folder is untouched: no book may be writing it
@pytest.mark.timeout(300)
def test_run_prints_progress_with_an_eta(tmp_path, no_book_running):
    """`vqpaper run 01`: a line per update with the section, the run (i/N), the epoch and an ETA,
    on the terminal and in the notebook's log as it happens (cold cache, small budget); with
    VQPAPER_BUILD elsewhere, the default build folder is not touched."""
    default = paths.ROOT / "_build"
    before = {p: p.stat().st_mtime_ns for p in default.glob("*/*") if p.parent.name in ("executed", "results", "html")}
    # long enough (about 5 s of training) that the epoch bars update while the ETA is known: the
    # batched trainer does a 4-epoch sweep before the display refreshes once
    proc = run_cli(["run", "01", "-p", "seeds", "[0, 1]", "-p", "pretrain_epochs", "30", "-p", "n_per_cluster", "2000",
                    "--progress-every", "0"], tmp_path / "build", timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("01_preliminaries | ")]
    pattern = r"\| Fig\. 2 runs: run \d/4 \| ETA \d+:\d\d \| .* epoch \d+/\d+ \| 6\. What the tokens"
    assert any(re.search(pattern, line) for line in lines), proc.stdout[-3000:]
    assert any("Fig. 2 runs: run 4/4 done" in line for line in lines)
    log = (tmp_path / "build" / "logs" / "01_preliminaries.log").read_text()
    assert [line for line in log.splitlines() if line.startswith("01_preliminaries | ")], log[-2000:]
    assert "\r" not in proc.stdout and "\r" not in log, "carriage-return fragments on a non-terminal"
    after = {p: p.stat().st_mtime_ns for p in default.glob("*/*") if p.parent.name in ("executed", "results", "html")}
    assert after == before, "a run into another build folder changed the default one"


SLEEPY = '''# %% tags=["parameters"]
profile = "ci"

# %%
import time
time.sleep(1)

# %%
time.sleep(600)
'''


@pytest.mark.slow  # one kernel: ~15 s
@pytest.mark.timeout(240)
def test_a_notebook_is_stopped_at_its_wall_clock_limit(tmp_path):
    """The limit is the whole notebook's: each cell may take what is left of it."""
    nb = tmp_path / "sleepy.py"
    nb.write_text(SLEEPY)
    job = runner.prepare(nb, "ci", build=tmp_path / "build", timeout_s=20)
    assert job.timeout_s == 20 and runner.timeout_for("02_tokens_collapse_synthetic", "ci") > 600
    assert runner.timeout_for("02_tokens_collapse_synthetic", "ci", 0) is None
    started = time.perf_counter()
    [outcome] = runner.run_notebooks([job], workers=1, out=io.StringIO())
    assert not outcome.ok and "longer than its limit of 20 s" in outcome.error, outcome.error
    assert time.perf_counter() - started < 120
    assert not (tmp_path / "build" / "executed" / "sleepy.ipynb").exists()


QUICK = '''# %% tags=["parameters"]
profile = "ci"

# %%
print("ran")
'''


@pytest.mark.slow  # two kernels: ~15 s
@pytest.mark.timeout(240)
def test_a_kernel_that_dies_before_it_starts_is_started_again(tmp_path, monkeypatch):
    """Kernels started at once by separate processes can race for a TCP port and die before they
    answer; such a start is retried (runner.KERNEL_START_RETRIES), a failure after a cell ran is not."""
    import papermill

    real, calls = papermill.execute_notebook, []

    def dies_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return real(*args, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", dies_first)
    nb = tmp_path / "quick.py"
    nb.write_text(QUICK)
    outcome = runner.execute(runner.prepare(nb, "ci", build=tmp_path / "build"))
    assert outcome.ok and len(calls) == 2, outcome.error
    assert "the kernel died before it started" in open(outcome.log).read()

    def always_dies(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("Kernel died before replying to kernel_info")

    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", always_dies)
    outcome = runner.execute(runner.prepare(nb, "ci", build=tmp_path / "build2"))
    assert not outcome.ok and len(calls) == runner.KERNEL_START_RETRIES + 1
    assert "Kernel died before replying" in outcome.error


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_terminated_run_stops_its_workers_and_kernels(tmp_path):
    """`kill` (SIGTERM) on `vqpaper run` ends it like Ctrl-C: exit 143, "terminated", and no worker
    or kernel of it keeps running (they outlived a killed parent before, training on)."""
    import psutil

    env = dict(os.environ, VQPAPER_BUILD=str(tmp_path / "build"), VQPAPER_NO_CACHE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "vqpaper.cli", "run", "01", "-p", "pretrain_epochs", "400"],
                            cwd=paths.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 150
        kernels = []
        while time.time() < deadline and not kernels:  # until its kernel runs
            time.sleep(1)
            family = psutil.Process(proc.pid).children(recursive=True)
            kernels = [p for p in family if "ipykernel" in _command_line(p)]
        assert kernels, "no kernel started within 150 s"
        time.sleep(2)
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143 and "terminated" in err, err[-2000:]
        gone, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, f"still running after the run was terminated: {[_command_line(p) for p in alive]}"
    finally:
        for p in [proc, *family] if "family" in locals() else [proc]:
            with contextlib.suppress(Exception):
                p.kill()


def _command_line(process):
    """A child's command line, or "" for one that ended between listing and reading it: a short-lived
    child of the run (a zombie until its parent reaps it, or already gone) is not a kernel."""
    import psutil

    try:
        return " ".join(process.cmdline())
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return ""


def test_book_order_starts_the_longest_chain_and_puts_a_notebook_after_those_whose_runs_it_reuses(tmp_path):
    """`vqpaper book`'s order (plan.book_priority): 05 reuses runs of 02 and 03 (the same configs),
    so both come before it; with the measured cold times 03 -> 05 is the longest chain and starts
    first. Longest-first alone would start 05 beside 03 and train 03's runs twice."""
    from vqpaper import plan

    jobs = runner.prepare_book(runner.available_notebooks(), "ci", {}, build=tmp_path)
    triples = [(j.name, j.profile, j.parameters) for j in jobs]
    names = [j.name for j in runner._order(jobs, plan.book_priority(triples, plan.COLD_CI_BOOK_S))]
    assert names == ["03_tokens_collapse_cifar10", "02_tokens_collapse_synthetic", "04_embeddings_collapse",
                     "05_simvq_comparison", "06_remedies", "01_preliminaries"]
    assert plan.book_dependencies(triples) == {j.name: ({"02_tokens_collapse_synthetic", "03_tokens_collapse_cifar10"}
                                                        if j.name == "05_simvq_comparison" else set()) for j in jobs}
    equal = runner._order(jobs, plan.book_priority(triples, {}))  # no timings at all: still after its producers
    position = {j.name: i for i, j in enumerate(equal)}
    assert position["05_simvq_comparison"] > max(position["02_tokens_collapse_synthetic"],
                                                 position["03_tokens_collapse_cifar10"])
    # changed parameters change what is shared: 05 with other seeds reuses nothing of 02's
    other = plan.book_priority([t if t[0] != "05_simvq_comparison" else (t[0], t[1], {**t[2], "seeds": [7]})
                                for t in triples], plan.COLD_CI_BOOK_S)
    assert other["02_tokens_collapse_synthetic"] == plan.COLD_CI_BOOK_S["02_tokens_collapse_synthetic"]


def test_book_priority_is_a_notebooks_time_plus_its_longest_chain_of_dependents(monkeypatch):
    from vqpaper import plan

    runs = {"a": {"r1", "r2"}, "b": {"r3"}, "c": {"r1"}, "d": {"r2", "r9"}, "e": {"r9"}, "x": set()}
    monkeypatch.setattr(plan, "_run_ids", lambda name, profile, parameters: runs[name])
    p = plan.book_priority([(n, "ci", {}) for n in "abcde"], {"a": 10, "b": 5, "c": 1, "d": 2, "e": 3})
    # a -> c (1), a -> d (2) -> e (3): 10 + 2 + 3
    assert p == {"a": 15.0, "b": 5.0, "c": 1.0, "d": 5.0, "e": 3.0}
    # an unknown time counts 1 s
    assert plan.book_priority([("x", "ci", {})], {}) == {"x": 1.0}


def test_a_notebook_waits_for_the_ones_it_depends_on_even_with_a_worker_free():
    """runner._ready: a job starts once every notebook in after[name] has ended (ok or failed),
    in priority order, at most as many as there are free workers."""
    jobs = [runner.Job(n, None, "ci", {}, None, None) for n in ("03", "02", "05", "06")]
    after = {"05": {"02", "03"}}
    assert [j.name for j in runner._ready(jobs, after, set(), 3)] == ["03", "02", "06"]
    assert [j.name for j in runner._ready(jobs[2:], after, {"02"}, 2)] == ["06"]    # 03 still running
    assert [j.name for j in runner._ready(jobs[2:], after, {"02", "03"}, 1)] == ["05"]
    assert runner._ready(jobs, after, set(), 0) == []


STAMP = '''# %% tags=["parameters"]
profile = "ci"
stamps = ""
name = ""
pause = 0.0

# %%
import time, pathlib
started = time.time()
time.sleep(pause)
with open(stamps, "a") as f:
    f.write(f"{name} {started} {time.time()}\\n")
'''


@pytest.mark.notebooks
@pytest.mark.timeout(300)
def test_run_notebooks_holds_a_dependent_back_until_its_producer_ends(tmp_path):
    """Two workers, two notebooks: without `after` they would run side by side; with it the second
    starts only when the first has ended (as 05 waits for 03 in `vqpaper book`)."""
    for n in ("98_first", "99_second"):
        (tmp_path / f"{n}.py").write_text(STAMP)
    stamps = tmp_path / "stamps.txt"
    jobs = [runner.prepare(tmp_path / "98_first.py", "ci", {"stamps": str(stamps), "name": "first", "pause": "3"},
                           build=tmp_path / "build"),
            runner.prepare(tmp_path / "99_second.py", "ci", {"stamps": str(stamps), "name": "second"},
                           build=tmp_path / "build")]
    outcomes = runner.run_notebooks(jobs, workers=2, out=io.StringIO(), after={"99_second": {"98_first"}},
                                    priority={"98_first": 1.0, "99_second": 2.0})  # the dependent ranks first
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    times = {line.split()[0]: [float(t) for t in line.split()[1:]] for line in stamps.read_text().splitlines()}
    assert times["second"][0] >= times["first"][1]
