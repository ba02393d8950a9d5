"""The experiments' helpers: run lists, tidy tables, the notebooks' small demonstrations."""
import re

import pytest

from vqpaper import config, paths
from vqpaper import experiments as ex
from vqpaper.errors import ConfigError
from vqpaper.experiments import range_text, unused_token_positions


def test_range_text():
    assert range_text([3, 3]) == "3" and range_text([5, 2, 4]) == "2 to 5"


def test_unused_token_positions_refuses_tokens_that_win():
    with pytest.raises(ConfigError, match="won an embedding"):
        unused_token_positions(used=[2.5], unused=[2.9], data=(2.0, 3.0), record_at=[0, 5])


def test_our_ema_with_the_laplace_update_is_the_library_s_and_eq5_is_not():
    rows = {r["update"]: r for r in ex.compare_ema_with_library(codebook_size=32, token_dim=4, steps=200)}
    assert rows["laplace"]["same_token_share"] == 1.0 and rows["laplace"]["max_codebook_gap"] < 1e-4
    # eq. (5) as written leaves unused tokens in place; the library drags them to the origin
    assert rows["eq5"]["max_codebook_gap"] > 0.1 and rows["eq5"]["ours_at_origin"] == 0


# ------------------------------------------------------------------ a notebook's start and its run list
@pytest.mark.parametrize("notebook", ["03_tokens_collapse_cifar10", "04_embeddings_collapse", "05_simvq_comparison"])
def test_the_set_up_paragraph_says_what_this_build_trains(notebook):
    """The set-up paragraphs of 03-05 glue ex.budget_sentence: computed from the parameters, so a
    changed preset or a -p value changes the text (03 once described a ci model it no longer ran)."""
    ci = ex.budget_sentence(config.notebook_config(notebook, "ci"))
    assert ci.startswith("This build runs the ci profile: ") and ci.endswith(".")
    assert "at most 1,024 training images" in ci and "16 channels" in ci and "learning rate 10⁻³" in ci
    paper = ex.budget_sentence(config.notebook_config(notebook, "paper"))
    assert "all training images" in paper and "128 channels" in paper and "learning rate 3·10⁻⁴" in paper
    if notebook == "03_tokens_collapse_cifar10":
        other = config.notebook_config(notebook, "ci", seeds=[0], codebook_sizes=[16, 64], scratch_epochs=7)
        want = ["codebook sizes 16 and 64", "7 epochs from scratch"]
    else:
        other = config.notebook_config(notebook, "ci", cifar_seeds=[0], seeds=[0, 1, 2, 3, 4], n_per_cluster=123)
        want = ["123 points per cluster", "5 seeds"]
    text = ex.budget_sentence(other)
    assert re.search(r"(?<![\d,])1 seed(?!s)", text) and all(w in text for w in want), text
    source = (paths.NOTEBOOKS / f"{notebook}.py").read_text()
    key = {"03": "tcc", "04": "ec", "05": "svq"}[notebook[:2]]
    assert f"{{glue:text}}`{key}.setup`" in source and f'book.glue_text("{key}.setup", ex.budget_sentence(cfg))' in source
    with pytest.raises(ConfigError, match="budget_sentence"):
        ex.budget_sentence(config.notebook_config("01_preliminaries", "ci"))


def test_the_synthetic_set_up_sentence_of_02_follows_its_parameters():
    """02's opening said "2, 3 and 8 dimensions" whatever -p dims was (seen re-running it with [2, 8])."""
    ci = ex.budget_sentence(config.notebook_config("02_tokens_collapse_synthetic", "ci"))
    assert ci.startswith("This build runs the ci profile: 2-D, 3-D and 8-D data (token dimensions 1, 1 and 4) ")
    assert "Laplace" in ci and ci.endswith(".")
    other = config.notebook_config("02_tokens_collapse_synthetic", "ci", dims=[8], token_dims=[2], seeds=[0],
                                   scratch_epochs=7, laplace_ablation=False)
    text = ex.budget_sentence(other)
    assert "8-D data (token dimension 2)" in text and "7 epochs from scratch" in text and text.endswith("; 1 seed.")
    source = (paths.NOTEBOOKS / "02_tokens_collapse_synthetic.py").read_text()
    assert "{glue:text}`tcs.setup`" in source and 'book.glue_text("tcs.setup", ex.budget_sentence(cfg))' in source
    assert "2, 3 and 8 dimensions" not in source


def test_the_budget_sentence_names_the_encoder_widths_each_sweep_of_05_trains():
    cfg = config.notebook_config("05_simvq_comparison", "ci", encoder_hiddens=[4, 16, 32])
    assert "encoder width 32, SimVQ from scratch also 4 and 16;" in ex.budget_sentence(cfg)
    one = config.notebook_config("05_simvq_comparison", "ci", codebook_sizes=[16])
    assert "; codebook size 16;" in ex.budget_sentence(one)
    assert ex._rate(3e-4) == "3·10⁻⁴" and ex._rate(1e-3) == "10⁻³" and ex._rate(0.05) == "0.05"


def test_setup_reads_exactly_the_notebook_s_parameters_from_its_namespace():
    names = config.notebook_config("02_tokens_collapse_synthetic", "ci").parameter_names()
    namespace = {**{name: None for name in names}, "seeds": [4, 5], "unrelated": 3, "profile": "ignored"}
    cfg = ex.setup("02_tokens_collapse_synthetic", "ci", namespace)
    assert cfg.seeds == [4, 5] and cfg.dims == config.PRESETS["02_tokens_collapse_synthetic"]["ci"].dims
    assert cfg.threads >= 1 and cfg.started > 0 and cfg.executor in ("local", "ray")
    del namespace["dims"]
    with pytest.raises(ConfigError, match=r"parameters cell of 02_tokens_collapse_synthetic does not define \['dims'\]"):
        ex.setup("02_tokens_collapse_synthetic", "ci", namespace)


def _sweep_names(source: str) -> set:
    import re

    named = set(re.findall(r'(?:run_sweep|remedy_runs)\(run_list, "([^"]+)"', source))
    for group in re.findall(r'run_sweeps\(run_list, \[([^\]]+)\]\)', source):  # several sweeps as one
        named |= set(re.findall(r'"([^"]+)"', group))
    return named


@pytest.mark.parametrize("notebook", sorted(config.PRESETS))
def test_each_notebook_runs_every_sweep_of_its_run_list_and_only_those(notebook):
    from conftest import REPO

    source = (REPO / "notebooks" / f"{notebook}.py").read_text()
    # every sweep either profile has (06 runs CIFAR-10 only where its `cifar` parameter says so)
    listed = {n for profile in config.PROFILES for n in ex.run_list(config.notebook_config(notebook, profile))}
    named = _sweep_names(source) or {n for n in listed if f'"{n}"' in source}
    assert named == listed, (named, listed)


def test_06_run_list_applies_every_recipe_to_the_same_base_runs():
    cfg = config.notebook_config("06_remedies", "ci", remedies=["ema", "restart"])
    runs = ex.run_list(cfg)["synthetic runs"]
    half = len(runs) // 2
    assert [c.quantizer for c in runs[:half]] == ["ema"] * half and {c.quantizer for c in runs[half:]} == {
        "vq-lib-restart"}
    assert [(c.dim, c.seed) for c in runs[:half]] == [(c.dim, c.seed) for c in runs[half:]]


def test_select_and_rows_refuse_a_key_the_runs_do_not_have():
    from vqpaper.train import RunResult

    runs = [RunResult(config={"dim": 2, "seed": s}, metrics={"mse": 0.1 * s}) for s in (1, 0)]
    assert [r.config["seed"] for r in ex.select(runs, dim=2)] == [0, 1]
    with pytest.raises(ConfigError, match="no config key 'dimension'"):
        ex.select(runs, dimension=2)
    with pytest.raises(ConfigError, match="no config key 'method'"):
        ex.rows(runs, keys=("dim", "method"))


def test_a_single_seed_is_tabled_with_an_unknown_spread():
    rows = [{"k": 16, "m": "a", "mse": 0.25}, {"k": 32, "m": "a", "mse": 0.5}, {"k": 32, "m": "a", "mse": 0.75}]
    s = ex.summary(rows, ["k", "m"], ["mse"])
    assert s["16/a"]["mse"]["std"] is None and s["32/a"]["mse"]["std"] > 0
    frame = ex.summary_frame(rows, ["k", "m"], ["mse"])
    assert list(frame["mse"]) == ["0.25 (sd unknown, 1 seed)", "0.625\u202f±\u202f0.18"]  # one unit: never split


def test_record_writes_the_notebook_s_provenance(tmp_path, monkeypatch):
    import json

    from vqpaper import paths

    monkeypatch.setattr(paths, "RESULTS", tmp_path)
    names = config.notebook_config("01_preliminaries", "ci").parameter_names()
    cfg = ex.setup("01_preliminaries", "ci", {name: None for name in names})
    record = json.loads(ex.record(cfg, "fig-x", {"a": 1.0}, seeds=[0]).read_text())
    assert record["notebook"] == "01_preliminaries" and record["profile"] == "ci" and record["seeds"] == [0]
    assert record["params"] == {**cfg.parameters()} and record["params"]["profile"] == "ci"
    assert record["provenance"]["environment"]["executor"] == cfg.executor


def test_optimiser_steps_follow_from_the_run():
    from vqpaper.train import RunResult

    run = RunResult(config={"batch_size": 128}, history=[{"stage": "scratch", "loss": 1.0}] * 6,
                    metrics={"n_train": 2048})
    assert ex.optimizer_steps(run) == 96                        # 2,048 / 128 = 16 per epoch, 6 epochs
    odd = RunResult(config={"batch_size": 128}, history=[{}] * 2, metrics={"n_train": 2049})
    assert ex.optimizer_steps(odd) == 34                        # a last, partial batch is a step too
    assert ex.optimizer_steps_text([run, run]) == "96 optimiser steps (2,048 images / batch 128 = 16 per epoch, × 6 epochs)"
    assert " or " in ex.optimizer_steps_text([run, odd])
    with pytest.raises(ConfigError, match="n_train"):
        ex.optimizer_steps(RunResult(config={"batch_size": 128}, history=[{}]))


def test_library_conclusion_is_computed_from_the_comparison():
    same = [{"update": "laplace", "same_token_share": 1.0, "max_codebook_gap": 1e-6},
            {"update": "eq5", "same_token_share": 0.6, "max_codebook_gap": 2.0}]
    assert ex.library_conclusion(same).startswith("So the two implementations are the same algorithm")
    ties = [{**same[0], "same_token_share": 0.9993, "max_codebook_gap": 0.0076}, same[1]]   # a few ties went either way
    assert ex.library_conclusion(ties).startswith("So the two implementations are the same algorithm")
    apart = [{**same[0], "same_token_share": 0.99}, same[1]]
    assert ex.library_conclusion(apart).startswith("So the two implementations differ")
    with pytest.raises(ConfigError, match="Laplace"):
        ex.library_conclusion(same[1:])


def test_extremes_sentence_never_compares_a_setting_with_itself():
    agg = {"32": {"test_mse": {"mean": 0.01}}, "8": {"test_mse": {"mean": 0.02}}, "2": {"test_mse": {"mean": 0.05}}}
    assert ex.extremes_sentence(agg, [32, 8, 2], "test_mse", "encoder channels") == (
        "With 32 encoder channels the test MSE is 0.0100; with 2 it is 0.0500.")
    one = ex.extremes_sentence(agg, [32], "test_mse", "encoder channels")
    assert one.count("0.0100") == 1 and "a second setting would be needed" in one


def test_fig2_draws_the_first_seeds_only_while_every_seed_stays_in_its_tables():
    """Notebook 01 trains 40 seeds for its checks; Fig. 2 draws FIG2_SEEDS_SHOWN of them (four
    histograms per seed: forty rows would be unreadable and took a minute to draw)."""
    import numpy as np

    from vqpaper.train import RunResult

    results, per_coordinate = [], []
    for seed in range(6):
        for method, encoder in ex.ENCODER_OF_METHOD.items():
            results.append(RunResult(config={"seed": seed, "method": method},
                                     arrays={"X": np.zeros((5, 2)), "Z_init": np.full((5, 2), float(seed))}))
            per_coordinate += [{"seed": seed, "encoder": encoder, "coordinate": c, "input peaks": 3} for c in (1, 2)]
    panels = ex.encoder_output_coordinate_panels(results, per_coordinate)
    assert len(panels) == ex.FIG2_SEEDS_SHOWN * 2 * 2
    assert {p["title"].split("seed ")[1].split(",")[0] for p in panels} == {str(s) for s in range(ex.FIG2_SEEDS_SHOWN)}
    assert len(ex.encoder_output_coordinate_panels(results, per_coordinate, max_seeds=10)) == 6 * 2 * 2
