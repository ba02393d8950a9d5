"""The paper's claims, one :class:`claims.Family` per sentence, as functions of the runs (notebooks 01-06).

Each function takes the runs a notebook trained (and, for Fig. 2, the tables made from them) and
returns a :class:`claims.Families`: families whose checks all point the way the paper's sentence
does, each with the sentence quoted (``quote``), where it is (``source``: a section or figure of
Zhao et al., or whose question it is when it is the companion's) and the metric the sentence
speaks of; and, in ``left_out``, the families these parameters cannot test, with what would
test them (a trend needs three codebook sizes; narrow against wide needs two widths). A
comparison of a setting with itself is never made: :func:`paired_checks` refuses it. Pairs are
seeds (Fig. 2 included: per seed, the mean over coordinates).

The notebook publishes them (``claims.publish``) and glues each family's phrase into its prose.
Being functions of the runs, they are tested with fabricated runs where they must hold, fail,
find no effect and stay undecided (tests/test_verdicts.py). Sentences that summarise verdicts
(:func:`ablation_sentence`, :func:`which_sentence`, :func:`cifar_trend_sentence`) are computed
here too, from the families and the runs, never typed next to them. :func:`claims_overview` and
:func:`paper_claims_count` gather the families of several notebooks for the results page.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

from .claims import (EQUAL, GREATER, HELD, INCONCLUSIVE, MIN_PAIRS, NO_EFFECT, NOT_HELD, OUTCOMES, Families, Family,
                     LeftOut, convergence, converged, log_slope, overview, paired, paired_interval, paper_count)
from .errors import ConfigError
from .experiments import list_text, select
from .recipes import BASELINE, key, parse_remedy
from .results import load_results

#: What a pair of a check is: one seed, run in both settings.
UNIT = "seed"
#: §3.1.2 and Fig. 4: "From 2^12, the original VQ-VAE start to suffer from severe token collapse".
LARGE_CODEBOOK = 2**12


def phrases(held: str, not_held: str, inconclusive: str, no_effect: Optional[str] = None) -> dict:
    """The book's sentence for each outcome of a family; ``not_held`` is "the other way", ``no_effect``
    (optional) "no effect larger than δ" (``claims.Family.phrase`` picks it from the decision)."""
    out = {HELD: held, NOT_HELD: not_held, INCONCLUSIVE: inconclusive}
    if no_effect is not None:
        out[NO_EFFECT] = no_effect
    return out


def claim_id(text: str) -> str:
    """A check's id (a glue key) from words: ``"tcs-coverage-K = 4,096"`` -> ``"tcs-coverage-k4096"``."""
    return text.lower().replace(" ", "").replace(",", "").replace("=", "")


def _dims_text(dims: Iterable[int]) -> str:
    return list_text([f"{d}-D" for d in dims])


def _sizes_text(sizes: Iterable[int]) -> str:
    return "K = " + list_text([f"{k:,}" for k in sizes])


_WORDS = {"method": "", "quantizer": "", "encoder_hidden": "hidden ", "encoder_channels": "channels ",
          "codebook_size": "K = ", "dim": ""}


def _where_text(where: dict) -> str:
    """A selection of runs in words: ``{"method": "pretrained", "encoder_hidden": 4}`` -> "pretrained, hidden 4"."""
    parts = []
    for k, v in where.items():
        word = _WORDS.get(k, k.replace("_", " ") + " ")
        parts.append(f"{word}{v:,}" if isinstance(v, int) and k != "dim" else f"{word}{v}")
    return ", ".join(parts)


# ------------------------------------------------------------------ paired checks over settings
def runs_converged(results: Sequence, **where) -> bool:
    """Whether every stage of every selected run's training loss has flattened (``claims.converged``)."""
    return all(converged(r.history) for r in select(results, **where))


def paired_checks(results: Sequence, metric: str, *, better: dict, worse: dict, over: str, values: Iterable,
                  label: str, claim: str, higher_is_better: bool = True, id_prefix: str = "",
                  worse_results: Optional[Sequence] = None, kind: str = GREATER) -> list:
    """One ``claims.paired`` check per value of ``over`` (e.g. per dim): ``better`` vs ``worse`` seed by seed.

    ``better``/``worse`` select runs (e.g. ``{"method": "pretrained"}``); ``label`` formats the
    setting (``"{}-D"``), ``claim`` the statement (``"{setting}: pretraining gives ..."``). The
    metric's smallest effect comes from ``claims.EFFECTS``; pairs are seeds, the same on both
    sides. A check is inconclusive when any run it compares had not converged
    (``claims.convergence``: every stage's loss, and the metric's drift where recorded; the
    report names the two settings). ``worse_results``: take the ``worse`` runs from another
    list (e.g. another quantizer's runs). Comparing runs with themselves is refused.
    """
    other = results if worse_results is None else worse_results
    out = []
    for value in values:
        setting = label.format(value)
        b = select(results, **{over: value}, **better)
        w = select(other, **{over: value}, **worse)
        if not b or not w:
            raise ValueError(f"{setting}: no runs to compare for {metric} ({len(b)} with {better}, {len(w)} with "
                             f"{worse})")
        if any(x is y for x in b for y in w):
            raise ValueError(f"{setting}: the runs compared for {metric} select the same runs on both sides "
                             f"({better} against {worse}): a setting compared with itself tests nothing")
        seeds = [r.config["seed"] for r in b]
        if seeds != [r.config["seed"] for r in w]:
            raise ValueError(f"{setting}: the runs compared for {metric} must have the same seeds on both sides, got "
                             f"{seeds} and {[r.config['seed'] for r in w]}")
        sizes = {r.config.get("codebook_size") for r in b + w}
        names = [f"{_where_text(better)}, {setting}", f"{_where_text(worse)}, {setting}"]
        out.append(paired(claim_id(f"{id_prefix}-{metric.replace('_', '-')}-{setting}"), claim.format(setting=setting),
                          [float(r.metrics[metric]) for r in b], [float(r.metrics[metric]) for r in w],
                          higher_is_better=higher_is_better, converged=convergence(b, w, metric=metric, names=names),
                          setting=setting, metric=metric, labels=seeds, unit=UNIT, kind=kind,
                          codebook_size=sizes.pop() if len(sizes) == 1 else None,
                          checkpoint=at_checkpoint(b, w, metric)))
    return out


def at_checkpoint(better: Sequence, worse: Sequence, metric: str) -> Optional[tuple]:
    """``(better, worse)`` values of ``metric`` at the runs' checkpoint (3/4 of the final stage), for
    ``claims.paired(checkpoint=...)``; None when a run recorded none."""
    values = []
    for runs in (better, worse):
        cps = [getattr(r, "checkpoint", None) for r in runs]
        if not all(cp and metric in cp.get("metrics", {}) for cp in cps):
            return None
        values.append([float(cp["metrics"][metric]) for cp in cps])
    return tuple(values)


def _one(results: Sequence, **where):
    """The one run matching ``where`` (a seed's run at one setting), or a ValueError naming what is missing."""
    found = select(results, **where)
    if len(found) != 1:
        raise ValueError(f"need exactly one run with {where}, found {len(found)}")
    return found[0]


def _seeds(results: Sequence, **where) -> list:
    return sorted({r.config["seed"] for r in select(results, **where)})


# ------------------------------------------------------------------ 01: Fig. 2
def encoder_output_families(runs: Sequence, per_run: Sequence[dict], per_coordinate: Sequence[dict]) -> Families:
    """The claims of Fig. 2 (01 §6), seed by seed, from the runs and their tables.

    ``per_run``/``per_coordinate``: ``experiments.encoder_output_rows`` and
    ``experiments.encoder_output_coordinates`` of ``runs`` (scratch runs hold the untrained
    encoder's outputs, pretrained runs the trained encoder's). A pair is a seed: the peak checks
    take, per seed, the mean over coordinates (coordinates of one run are not independent
    draws). The trained encoder is read after its autoencoder pretraining, so the checks on it
    are inconclusive unless that stage converged (``claims.convergence`` on stage
    ``"pretrain"``; the one VQ epoch after it changes nothing compared here).

    * pre-range-narrower (range, log): the trained encoder's range against the untrained one's;
    * pre-untrained-fewer-peaks (peaks): the input's peaks minus the untrained encoder's, > 0;
    * pre-trained-peaks-match-input (peaks, ``kind="equal"``): the trained encoder's peaks minus
      the input's, inside ±½ peak.
    """
    def pick(rows_, encoder):
        return sorted((r for r in rows_ if r["encoder"] == encoder), key=lambda r: (r["seed"], r.get("coordinate", 0)))

    u_run, t_run = pick(per_run, "untrained"), pick(per_run, "trained")
    seeds = [r["seed"] for r in u_run]
    if not seeds or seeds != [r["seed"] for r in t_run] or len(set(seeds)) != len(seeds):
        raise ValueError(f"encoder_output_families: need one untrained and one trained run per seed, got seeds "
                         f"{seeds} and {[r['seed'] for r in t_run]}")

    def mean_over_coordinates(encoder, key):
        out = []
        for s in seeds:
            values = [r[key] for r in per_coordinate if r["encoder"] == encoder and r["seed"] == s]
            if not values:
                raise ValueError(f"encoder_output_families: no coordinates of the {encoder} encoder for seed {s}")
            out.append(math.fsum(values) / len(values))
        return out

    trained = select(runs, method="pretrained")
    if sorted(r.config["seed"] for r in trained) != sorted(seeds):
        raise ValueError(f"encoder_output_families: the pretrained runs have seeds "
                         f"{sorted(r.config['seed'] for r in trained)}, the tables {seeds}")
    pretraining = convergence(trained, names=["trained encoder (autoencoder pretraining)"], stages=("pretrain",))
    u_peaks, t_peaks = mean_over_coordinates("untrained", "peaks"), mean_over_coordinates("trained", "peaks")
    inputs = mean_over_coordinates("untrained", "input peaks")
    if inputs != mean_over_coordinates("trained", "input peaks"):
        raise ValueError("encoder_output_families: the scratch and pretrained runs of a seed saw different inputs")
    common = dict(labels=seeds, unit=UNIT)
    return Families([
        Family("pre-range-narrower", "§3.1, Fig. 2 (a)",
               "the untrained encoder's outputs span a narrower range than the trained encoder's",
               [paired("pre-range-ratio", "per seed: the trained encoder's outputs span a wider range than the "
                       "untrained encoder's", [r["range"] for r in t_run], [r["range"] for r in u_run],
                       metric="range", converged=pretraining, setting="range, trained over untrained", **common)],
               phrases("The untrained encoder's outputs span a narrower range than the trained encoder's, as in the "
                       "paper's Fig. 2 (a).",
                       "The untrained encoder's outputs span a wider range than the trained encoder's here, unlike "
                       "the paper's Fig. 2 (a).",
                       "Whether the untrained encoder's outputs span a narrower range than the trained encoder's "
                       "cannot be decided from these seeds.",
                       "The untrained and the trained encoder's outputs span ranges within 10% of each other here: "
                       "the narrow range of the paper's Fig. 2 (a) is not seen."),
               quote="Untrained encoder's output … clusters around a relatively small range"),
        Family("pre-untrained-fewer-peaks", "§3.1, Fig. 2 (a)",
               "the untrained encoder's outputs show fewer peaks than the input",
               [paired("pre-untrained-fewer-peaks-than-input", "per seed, mean over coordinates: the input shows "
                       "more KDE peaks than the untrained encoder's outputs", inputs, u_peaks, metric="peaks",
                       setting="peaks, input minus untrained", **common)],
               phrases("The untrained encoder's outputs show fewer peaks than the input, seed by seed, as the "
                       "paper's Fig. 2 (a) says: it merges some of the input's modes.",
                       "The untrained encoder's outputs show more peaks than the input here, unlike the paper's "
                       "Fig. 2 (a).",
                       "Whether the untrained encoder's outputs show fewer peaks than the input cannot be decided "
                       "from these seeds.",
                       "The untrained encoder's outputs show as many peaks as the input here (within half a peak): "
                       "the merged modes of the paper's Fig. 2 (a) are not seen."),
               quote="Untrained encoder's output has fewer peaks than 10 peaks of input"),
        Family("pre-trained-peaks-match-input", "§3.1, Fig. 2 (b)",
               "the trained encoder's outputs show as many peaks as the input",
               [paired("pre-trained-peaks-as-input", "per seed, mean over coordinates: the trained encoder's outputs "
                       "show as many KDE peaks as the input (within half a peak)", t_peaks, inputs, metric="peaks",
                       kind=EQUAL, converged=pretraining, setting="peaks, trained minus input", **common)],
               phrases("The trained encoder's outputs show as many peaks as the input (within half a peak, seed by "
                       "seed), as the paper's Fig. 2 (b) says: pretraining keeps the input's modes apart.",
                       "The trained encoder's peaks differ from the input's by more than half a peak here, unlike "
                       "the paper's Fig. 2 (b) (the table of checks says which way).",
                       "Whether the trained encoder's outputs show as many peaks as the input cannot be decided "
                       "from these seeds."),
               quote="Trained encoder's output displays 10 peaks which is the same as the input"),
    ])


# ------------------------------------------------------------------ 02: tokens collapse, synthetic
def tokens_collapse_synthetic(runs: Sequence, dims: Sequence[int], suffix: str = "", note: str = "") -> Families:
    """§3.1 and §3.1.1, Fig. 3: pretraining, then VQ, against a VQ-VAE from scratch (same quantizer), per dim.

    ``suffix``/``note`` tell apart an ablation (e.g. ``"-laplace"``, ``" (Laplace-smoothed update)"``):
    its families are the companion's ("companion ablation of §3.1.1"), never the paper's.
    ``tcs-alloc-entropy`` is a companion measure (the allocation entropy saturates near 1 in
    8-D), shown beside ``tcs-uniform``, which decides on the perplexity of token use.
    """
    where = _dims_text(dims)

    def source(paper_source):
        return "companion ablation of §3.1.1" if suffix else paper_source

    common = dict(better={"method": "pretrained"}, worse={"method": "scratch"}, over="dim", values=dims,
                  label="{}-D", id_prefix=f"tcs{suffix}")
    return Families([
        Family(
            f"tcs-uniform{suffix}", source("§3.1.1, Fig. 3"),
            f"with pretraining the tokens are used more uniformly (a higher perplexity of token use){note}",
            paired_checks(runs, "perplexity", claim="{setting}: pretraining gives a higher perplexity of token use "
                          "than scratch", **common),
            phrases(f"With pretraining the tokens are used more uniformly than from scratch (a higher perplexity), "
                    f"in {where}{note}.",
                    f"Pretraining made token use less uniform somewhere{note}; the table below shows where.",
                    f"Whether pretraining makes token use more uniform cannot be decided at this budget{note}.",
                    f"Pretraining did not change how uniformly the tokens are used by more than 10% somewhere"
                    f"{note}; the table below shows where."),
            quote="with our pretraining solution, the distribution of tokens is more uniform"),
        Family(
            f"tcs-worst-cluster{suffix}", source("§3.1, Fig. 3 (a), (c), (e)"),
            f"from scratch some clusters are left with few tokens; pretraining gives the worst-served cluster "
            f"more{note}",
            paired_checks(runs, "min_tokens_per_cluster", claim="{setting}: pretraining gives the worst-served "
                          "cluster more tokens than scratch", **common),
            phrases(f"The worst-served cluster gets more tokens with pretraining than from scratch, in {where}{note}.",
                    f"With pretraining the worst-served cluster got fewer tokens somewhere{note}.",
                    f"Whether pretraining gives the worst-served cluster more tokens cannot be decided at this "
                    f"budget{note}.",
                    f"Pretraining did not give the worst-served cluster more tokens somewhere (no difference of "
                    f"a hundredth of the codebook){note}."),
            quote="embeddings assigned only a few tokens exhibit severely insufficient representations"),
        Family(
            f"tcs-narrower-recon{suffix}", source("§3.1, Fig. 3"),
            f"from scratch the worst-served cluster's reconstructions are narrower than with pretraining{note}",
            paired_checks(runs, "min_spread_ratio", claim="{setting}: pretraining keeps more of the worst cluster's "
                          "spread in its reconstructions than scratch", **common),
            phrases(f"From scratch the worst cluster's reconstructions are narrower than with pretraining, in "
                    f"{where}{note}.",
                    f"With pretraining the worst cluster's reconstructions were narrower somewhere{note}.",
                    f"Whether the reconstructions are narrower from scratch cannot be decided at this budget{note}.",
                    f"The worst cluster's reconstructions were about as wide with pretraining as from scratch "
                    f"somewhere{note}."),
            quote="which leads to the corresponding reconstructed distribution being narrower"),
        Family(
            f"tcs-coverage{suffix}", source("§3.1.1, Fig. 3"),
            f"with pretraining the reconstructions cover the data better{note}",
            paired_checks(runs, "coverage", claim="{setting}: pretraining gives a higher coverage than scratch",
                          **common),
            phrases(f"With pretraining the reconstructions cover more of the data than from scratch, in {where}{note}.",
                    f"With pretraining the reconstructions covered less of the data somewhere{note}.",
                    f"Whether pretraining improves the coverage of the data cannot be decided at this budget{note}.",
                    f"Pretraining did not change the coverage of the data by more than 0.05 somewhere{note}."),
            quote="the reconstruction distribution covers closer to the original data"),
        Family(
            f"tcs-alloc-entropy{suffix}", source("companion measure of §3.1.1"),
            f"with pretraining the tokens are spread more evenly over the data's clusters (allocation entropy; "
            f"it saturates near 1 in 8-D){note}",
            paired_checks(runs, "alloc_entropy", claim="{setting}: pretraining gives a higher allocation entropy "
                          "than scratch", **common),
            phrases(f"The allocation entropy agrees: with pretraining the tokens are spread more evenly over the "
                    f"clusters, in {where}{note}.",
                    f"The allocation entropy was lower with pretraining somewhere{note}.",
                    f"The allocation entropy does not decide between the two recipes at this budget{note}.",
                    f"The allocation entropy does not tell the recipes apart somewhere (within 0.05; it saturates "
                    f"near 1){note}."),
            quote="with our pretraining solution, the distribution of tokens is more uniform"),
    ])


# ------------------------------------------------------------------ 03: tokens collapse, CIFAR-10
def large_codebooks(sizes: Sequence[int]) -> list[int]:
    """The codebook sizes the paper calls large (2^12 and up), else the largest one when there are two or more."""
    sizes = sorted(set(sizes))
    return [k for k in sizes if k >= LARGE_CODEBOOK] or (sizes[-1:] if len(sizes) >= 2 else [])


def per_seed_slopes(runs: Sequence, metric: str, sizes: Sequence[int], at_checkpoint_: bool = False,
                    **where) -> tuple[list, list[float]]:
    """``(seeds, slopes)``: per seed, the least-squares slope of log ``metric`` over log K across ``sizes``
    (``at_checkpoint_``: of the values the runs recorded at 3/4 of their final stage)."""
    sizes = sorted(set(sizes))
    if len(sizes) < 2:
        raise ValueError(f"a slope over the codebook size needs at least two sizes, got {sizes}")
    seeds = _seeds(runs, codebook_size=sizes[0], **where)
    for k in sizes[1:]:
        if _seeds(runs, codebook_size=k, **where) != seeds:
            raise ValueError(f"slope of {metric}: the runs {where} have seeds {seeds} at K = {sizes[0]:,} but "
                             f"{_seeds(runs, codebook_size=k, **where)} at K = {k:,}")

    def value(run):
        return float((run.checkpoint["metrics"] if at_checkpoint_ else run.metrics)[metric])

    return seeds, [log_slope(sizes, [value(_one(runs, codebook_size=k, seed=s, **where)) for k in sizes])
                   for s in seeds]


def _slope_check(runs, metric, method, sizes, check_id, statement, *, effect_metric, falling=False, kind=GREATER):
    """A check on the per-seed slope of log ``metric`` over log K: rising (> 0), falling (< 0) or flat (equal)."""
    seeds, slopes = per_seed_slopes(runs, metric, sizes, method=method)
    zeros = [0.0] * len(slopes)
    groups = [select(runs, codebook_size=k, method=method) for k in sizes]
    conv = convergence(*groups, metric=metric, names=[f"{method}, K = {k:,}" for k in sizes])
    better, worse = (zeros, slopes) if falling else (slopes, zeros)
    checkpoint = None
    if all(at_checkpoint(g, g, metric) for g in groups):  # the same slopes from the checkpoint's values
        ck = per_seed_slopes(runs, metric, sizes, at_checkpoint_=True, method=method)[1]
        checkpoint = (zeros, ck) if falling else (ck, zeros)
    return paired(check_id, statement, better, worse, metric=effect_metric, kind=kind, labels=seeds, unit=UNIT,
                  converged=conv, setting=f"{_sizes_text(sizes)}", checkpoint=checkpoint)


def _suggest_sizes(sizes: Sequence[int], need: int, at_least: int = 1) -> str:
    """Sizes to add so that ``need`` sizes are at least ``at_least`` (powers of two above the largest)."""
    have = [k for k in sizes if k >= at_least]
    k, add = max([at_least // 2, *sizes]), []
    while len(have) + len(add) < need:
        k *= 2
        if k >= at_least and k not in sizes:
            add.append(k)
    return list_text([f"{k:,}" for k in add])


def tokens_collapse_cifar(runs: Sequence, sizes: Sequence[int]) -> Families:
    """§3.1.2, Fig. 4: the codebook sweep, pretrained against scratch, seed by seed.

    * tcc-smallest-mse (test MSE, the smallest K; needs a larger size beside it);
    * tcc-large-perplexity, tcc-large-mse (at each K >= 2^12, else the largest of two or more);
    * tcc-pretrained-perplexity-rising, tcc-pretrained-mse-falling: the per-seed slope of log
      perplexity (log test MSE) over log K across all sizes (a trend: three sizes or more);
    * tcc-scratch-stagnates (``kind="equal"``): the scratch slope of log perplexity over log K
      from 2^12 on, inside ±δ (two sizes of 2^12 or more).

    A family these sizes cannot test is left out (``Families.left_out``) with what would test it.
    """
    sizes = sorted(set(sizes))
    pre, scr = {"method": "pretrained"}, {"method": "scratch"}
    have = f"this sweep has {_sizes_text(sizes)}"
    fams, left = [], []
    fig4 = "§3.1.2, Fig. 4"
    q_small = "at lower token numbers, our solution exhibits a slight performance disadvantage"
    if len(sizes) >= 2:
        fams.append(Family(
            "tcc-smallest-mse", fig4, "at the smallest codebook pretraining is slightly worse (higher test MSE)",
            paired_checks(runs, "test_mse", better=pre, worse=scr, over="codebook_size", values=[sizes[0]],
                          label="K = {:,}", id_prefix="tcc-smallest",
                          claim="{setting}: pretraining gives a higher test MSE than scratch"),
            phrases("At the smallest codebook pretraining is slightly worse (a higher test MSE), as the paper saw.",
                    "At the smallest codebook pretraining was better than training from scratch (a lower test MSE).",
                    "Whether pretraining is worse at the smallest codebook cannot be decided at this budget.",
                    "At the smallest codebook the two recipes' test MSEs are within 10% of each other."),
            quote=q_small))
    else:
        left.append(LeftOut("tcc-smallest-mse", fig4, "at the smallest codebook pretraining is slightly worse",
                            f"The smallest codebook needs a larger one beside it: {have} only; add a larger size "
                            f"to codebook_sizes.", quote=q_small))
    large = large_codebooks(sizes)
    q_large = "our method significantly surpasses … with lower MSE and higher codebook perplexity"
    if large:
        at_large = dict(better=pre, worse=scr, over="codebook_size", values=large, label="K = {:,}", id_prefix="tcc")
        fams += [
            Family("tcc-large-perplexity", fig4, "at large codebooks pretraining gives a higher perplexity than "
                   "training from scratch",
                   paired_checks(runs, "perplexity", claim="{setting}: pretraining gives a higher perplexity than "
                                 "scratch", **at_large),
                   phrases(f"At large codebooks ({_sizes_text(large)}) pretraining gives a higher codebook "
                           f"perplexity than training from scratch.",
                           "At a large codebook pretraining gave a lower codebook perplexity.",
                           "Whether pretraining gives a higher perplexity at large codebooks cannot be decided at "
                           "this budget.",
                           "At a large codebook the two recipes' perplexities are within 10% of each other."),
                   quote=q_large),
            Family("tcc-large-mse", fig4, "at large codebooks pretraining gives a lower test MSE",
                   paired_checks(runs, "test_mse", claim="{setting}: pretraining gives a lower test MSE than scratch",
                                 higher_is_better=False, **at_large),
                   phrases(f"At large codebooks ({_sizes_text(large)}) pretraining gives a lower test MSE than "
                           f"training from scratch.",
                           "At a large codebook pretraining gave a higher test MSE.",
                           "Whether pretraining lowers the test MSE at large codebooks cannot be decided at this "
                           "budget.",
                           "At a large codebook the two recipes' test MSEs are within 10% of each other."),
                   quote=q_large)]
    else:
        why = (f"A large codebook (2^12 = 4,096 or more, or the largest of two sizes) is needed: {have} only; add "
               f"4,096 to codebook_sizes.")
        left += [LeftOut("tcc-large-perplexity", fig4, "at large codebooks pretraining gives a higher perplexity",
                         why, quote=q_large),
                 LeftOut("tcc-large-mse", fig4, "at large codebooks pretraining gives a lower test MSE", why,
                         quote=q_large)]
    q_trend = "resulting in continually decreasing MSE and increasing perplexity"
    if len(sizes) >= 3:
        fams += [
            Family("tcc-pretrained-perplexity-rising", "§3.1.2, Fig. 4 caption",
                   "the pretrained model's perplexity keeps increasing with the codebook size",
                   [_slope_check(runs, "perplexity", "pretrained", sizes, "tcc-pretrained-perplexity-slope",
                                 f"{_sizes_text(sizes)}: the pretrained perplexity rises with K (slope of log "
                                 f"perplexity over log K, per seed)", effect_metric="log_perplexity_slope")],
                   phrases("The pretrained model's perplexity keeps rising with the codebook size over the whole "
                           "sweep.",
                           "The pretrained model's perplexity falls with the codebook size over the sweep.",
                           "Whether the pretrained perplexity keeps rising with the codebook size cannot be decided "
                           "at this budget.",
                           "The pretrained model's perplexity stays flat over the sweep (slope within ±0.05)."),
                   quote=q_trend),
            Family("tcc-pretrained-mse-falling", "§3.1.2, Fig. 4 caption",
                   "the pretrained model's test MSE keeps decreasing with the codebook size",
                   [_slope_check(runs, "test_mse", "pretrained", sizes, "tcc-pretrained-mse-slope",
                                 f"{_sizes_text(sizes)}: the pretrained test MSE falls with K (slope of log test MSE "
                                 f"over log K, per seed)", effect_metric="log_test_mse_slope", falling=True)],
                   phrases("The pretrained model's test MSE keeps falling with the codebook size over the whole "
                           "sweep.",
                           "The pretrained model's test MSE rises with the codebook size over the sweep.",
                           "Whether the pretrained test MSE keeps falling with the codebook size cannot be decided "
                           "at this budget.",
                           "The pretrained model's test MSE stays flat over the sweep (slope within ±0.05)."),
                   quote=q_trend)]
    else:
        why = (f"A trend over the codebook size needs at least three sizes: {have} only; add "
               f"{_suggest_sizes(sizes, 3)} to codebook_sizes.")
        left += [LeftOut("tcc-pretrained-perplexity-rising", "§3.1.2, Fig. 4 caption",
                         "the pretrained perplexity keeps increasing with K", why, quote=q_trend),
                 LeftOut("tcc-pretrained-mse-falling", "§3.1.2, Fig. 4 caption",
                         "the pretrained test MSE keeps decreasing with K", why, quote=q_trend)]
    big = [k for k in sizes if k >= LARGE_CODEBOOK]
    q_stag = "From 2^12, the original VQ-VAE start to suffer … causing MSE and perplexity to stagnate"
    if len(big) >= 2:
        fams.append(Family(
            "tcc-scratch-stagnates", "§3.1.2, Fig. 4 caption",
            "from 2^12 on, the perplexity of the VQ-VAE trained from scratch stagnates",
            [_slope_check(runs, "perplexity", "scratch", big, "tcc-scratch-perplexity-slope-large",
                          f"{_sizes_text(big)}: the scratch perplexity stays flat (slope of log perplexity over "
                          f"log K within ±0.05, per seed)", effect_metric="log_perplexity_slope", kind=EQUAL)],
            phrases(f"From 2^12 on ({_sizes_text(big)}) the perplexity of the model trained from scratch stagnates.",
                    f"From 2^12 on ({_sizes_text(big)}) the perplexity of the model trained from scratch still "
                    f"changes with the codebook size (the table of checks says which way).",
                    "Whether the scratch perplexity stagnates from 2^12 on cannot be decided at this budget."),
            quote=q_stag))
    else:
        left.append(LeftOut(
            "tcc-scratch-stagnates", "§3.1.2, Fig. 4 caption", "from 2^12 on, the scratch perplexity stagnates",
            f"Stagnation from 2^12 needs at least two codebook sizes of 4,096 or more: {have}; add "
            f"{_suggest_sizes(sizes, 2, LARGE_CODEBOOK)} to codebook_sizes.", quote=q_stag))
    return Families(fams, left)


def cifar_trend_sentence(runs: Sequence, sizes: Sequence[int]) -> str:
    """How the perplexity and the test MSE move with K over the sweep, per recipe (computed, for 03's prose)."""
    sizes = sorted(set(sizes))
    if len(sizes) < 2:
        return (f"With one codebook size ({_sizes_text(sizes)}) there is no trend over the codebook size to show; "
                f"re-run with several codebook_sizes.")

    def mean_slope(metric, method, ks):
        _, slopes = per_seed_slopes(runs, metric, ks, method=method)
        return f"{math.fsum(slopes) / len(slopes):.2f}".replace("-0.00", "0.00")

    text = (f"Over {_sizes_text(sizes)} the perplexity grows as K^{mean_slope('perplexity', 'pretrained', sizes)} "
            f"with pretraining and K^{mean_slope('perplexity', 'scratch', sizes)} from scratch, the test MSE as "
            f"K^{mean_slope('test_mse', 'pretrained', sizes)} and K^{mean_slope('test_mse', 'scratch', sizes)} "
            f"(least-squares slopes of the logs, mean over seeds; a slope of 1 is a perplexity that grows as K)")
    if len(sizes) == 2:
        text += "; two sizes give a two-point slope, not a trend: the trend claims need three"
    big = [k for k in sizes if k >= LARGE_CODEBOOK]
    if len(big) >= 2:
        text += (f". From 2^12 on ({_sizes_text(big)}) the scratch perplexity grows as "
                 f"K^{mean_slope('perplexity', 'scratch', big)}, the pretrained one as "
                 f"K^{mean_slope('perplexity', 'pretrained', big)}")
    return text + "."


# ------------------------------------------------------------------ 04: embeddings collapse
def embeddings_collapse(runs: Sequence, dims: Sequence[int], token_dims: Sequence[int], narrow: int,
                        wide: int) -> Families:
    """§3.2, Fig. 5: a VQ-VAE from scratch with a narrow encoder against a wide one (the paper's set-up).

    The paper's sentences: reconstructions outside the data (precision), merged embedding peaks
    and tokens outside the embeddings (``metrics.tokens_outside``); the participation ratio and
    the synthetic MSE are the companion's measures. With one encoder width every family is left
    out (narrow against wide needs two). Peaks and tokens outside are checked where the tokens
    are 1-D, as in the paper's Fig. 5, whose distributions are 1-D histograms: with token
    dimension 4 most tokens of *every* width lie outside by the nearest-neighbour measure (0.76
    to 0.87 at ``ci``), unused tokens left where K-means put them while the embeddings moved, which
    is tokens collapse, not the encoder's.
    """
    fig5 = "§3.2, Fig. 5 (a)"
    q_out = "reconstruction contains erroneous results which fall outside the original input data distribution"
    q_peaks = "the output embeddings from the encoder tend to have most of their peaks merged together"
    q_tokens = "parts of the tokens distribution lie outside the embeddings distribution"
    specs = [("ec-outside-data", fig5, q_out), ("ec-merged-peaks", fig5, q_peaks),
             ("ec-tokens-outside", fig5, q_tokens), ("ec-participation", "companion measure of §3.2", ""),
             ("ec-mse", "companion measure of §3.2", "")]
    if narrow == wide:
        why = (f"Narrow against wide needs two encoder widths: this run has encoder_hiddens = [{narrow}] only; add "
               f"a wider one (the paper: 4 against 32).")
        return Families([], [LeftOut(fid, src, "narrow against wide encoder", why, quote=q) for fid, src, q in specs])
    where = _dims_text(dims)
    w, n = {"encoder_hidden": wide}, {"encoder_hidden": narrow}
    common = dict(better=w, worse=n, over="dim", values=dims, label="{}-D", id_prefix="ec")
    peak_dims = [d for d, t in zip(dims, token_dims) if t == 1]  # peaks of 1-D embeddings only
    fams = Families([
        Family("ec-outside-data", fig5,
               "with a narrow encoder more reconstructions fall outside the data (a lower precision)",
               paired_checks(runs, "precision", claim=f"{{setting}}: hidden {wide} gives a higher precision "
                             f"(reconstructions inside the data) than hidden {narrow}", **common),
               phrases(f"With the narrow encoder more reconstructions fall outside the data, in {where}.",
                       "With the narrow encoder fewer reconstructions fell outside the data somewhere.",
                       "Whether the narrow encoder's reconstructions fall outside the data more often cannot be "
                       "decided at this budget.",
                       "The two encoders' reconstructions fall outside the data about as often somewhere (precision "
                       "within 0.05)."),
               quote=q_out),
        Family("ec-participation", "companion measure of §3.2",
               f"a narrow encoder (hidden {narrow}) spreads its embeddings over fewer directions than a wide one "
               f"(hidden {wide}): a lower participation ratio",
               paired_checks(runs, "participation_ratio", claim=f"{{setting}}: hidden {wide} gives a higher "
                             f"participation ratio of the embeddings than hidden {narrow}", **common),
               phrases(f"The narrow encoder's embeddings occupy fewer effective dimensions, in {where}.",
                       "The narrow encoder's embeddings occupied more effective dimensions somewhere.",
                       "Whether the narrow encoder's embeddings occupy fewer directions cannot be decided at this "
                       "budget.",
                       "The two encoders' embeddings occupy about as many effective dimensions somewhere (within "
                       "0.05)."),
               quote=""),
        Family("ec-mse", "companion measure of §3.2", "on the synthetic data a narrow encoder reconstructs worse "
               "(higher MSE; the paper claims this for CIFAR-10 only)",
               paired_checks(runs, "mse", claim=f"{{setting}}: hidden {wide} gives a lower MSE than hidden {narrow}",
                             higher_is_better=False, **common),
               phrases(f"On the synthetic data the narrow encoder reconstructs worse, in {where}.",
                       "On the synthetic data the narrow encoder reconstructed better somewhere.",
                       "Whether the narrow encoder reconstructs the synthetic data worse cannot be decided at this "
                       "budget.",
                       "On the synthetic data the two encoders' MSEs are within 10% of each other somewhere.")),
    ])
    if peak_dims:
        fams.insert(1, Family(
            "ec-merged-peaks", fig5, "the narrow encoder's embedding histogram has its peaks merged (fewer peaks)",
            paired_checks(runs, "embedding_peaks", claim=f"{{setting}}: hidden {wide} gives more embedding "
                          f"histogram peaks than hidden {narrow}", **{**common, "values": peak_dims}),
            phrases(f"The narrow encoder's embedding histogram shows fewer, merged peaks, in {_dims_text(peak_dims)}.",
                    "The narrow encoder's embedding histogram showed more peaks somewhere.",
                    "Whether the narrow encoder merges the peaks of its embeddings cannot be decided at this "
                    "budget.",
                    "The two encoders' embedding histograms show as many peaks (within half a peak) somewhere."),
            quote=q_peaks))
        fams.insert(2, Family(
            "ec-tokens-outside", fig5,
            "with a narrow encoder more of the tokens lie outside the embeddings' distribution",
            paired_checks(runs, "tokens_outside", better=n, worse=w, over="dim", values=peak_dims, label="{}-D",
                          id_prefix="ec", claim=f"{{setting}}: hidden {narrow} leaves a larger share of the "
                          f"tokens outside the embeddings than hidden {wide}"),
            phrases(f"With the narrow encoder more of the tokens lie outside the embeddings' distribution, in "
                    f"{_dims_text(peak_dims)}.",
                    "With the narrow encoder fewer tokens lay outside the embeddings somewhere.",
                    "Whether more tokens lie outside the narrow encoder's embeddings cannot be decided at this "
                    "budget.",
                    "About as many tokens lie outside the embeddings with either encoder somewhere (within 5% "
                    "of the codebook)."),
            quote=q_tokens))
    else:
        why = ("Checked on 1-D tokens, as in the paper's Fig. 5: no data dimension of this run has token dimension "
               "1; add one (e.g. dims [2], token_dims [1]).")
        fams.left_out += [LeftOut("ec-merged-peaks", fig5, "the narrow encoder merges its embeddings' peaks", why,
                                  quote=q_peaks),
                          LeftOut("ec-tokens-outside", fig5, "more tokens lie outside the narrow encoder's "
                                  "embeddings", why, quote=q_tokens)]
    return fams


def embeddings_collapse_cifar(runs: Sequence, widths: Sequence[int]) -> Families:
    """§3.2, Fig. 6: the widest encoder against the narrowest one on CIFAR-10 (two widths or more)."""
    widths = sorted(set(widths), reverse=True)
    q = "decreasing the size of the encoder undermines the reconstruction performance with increased MSE"
    if len(widths) < 2:
        return Families([], [LeftOut("ec-cifar-mse", "§3.2, Fig. 6", "a smaller encoder raises the CIFAR-10 test MSE",
                                     f"Widest against narrowest needs two encoder widths: this run has "
                                     f"encoder_channels = {widths} only; add a narrower one.", quote=q)])
    return Families([Family(
        "ec-cifar-mse", "§3.2, Fig. 6", "on CIFAR-10 a smaller encoder raises the test MSE",
        paired_checks(runs, "test_mse", better={"encoder_channels": widths[0]},
                      worse={"encoder_channels": widths[-1]}, over="codebook_size",
                      values=sorted({r.config["codebook_size"] for r in runs}), label="K = {:,}",
                      id_prefix="ec-cifar", higher_is_better=False,
                      claim=f"{{setting}}: {widths[0]} encoder channels give a lower test MSE than {widths[-1]}"),
        phrases(f"On CIFAR-10 the narrowest encoder ({widths[-1]} channels) has a higher test MSE than the widest "
                f"({widths[0]}).",
                f"On CIFAR-10 the narrowest encoder ({widths[-1]} channels) had a lower test MSE than the widest.",
                "Whether a smaller encoder raises the CIFAR-10 test MSE cannot be decided at this budget.",
                f"On CIFAR-10 the narrowest and the widest encoder's test MSEs are within 10% of each other."),
        quote=q)])


def embeddings_collapse_pretrained(runs: Sequence, dims: Sequence[int], narrow: int, wide: int) -> Families:
    """The companion's own variant (not a claim of the paper): both encoders pretrained, narrow vs wide."""
    if narrow == wide:
        why = (f"Narrow against wide needs two encoder widths: this run has pretrained_hiddens = [{narrow}] only.")
        return Families([], [LeftOut(fid, "companion variant", "both pretrained, narrow against wide", why)
                             for fid in ("ec-variant-spread", "ec-variant-mse")])
    common = dict(better={"encoder_hidden": wide}, worse={"encoder_hidden": narrow}, over="dim", values=dims,
                  label="{}-D", id_prefix="ec-variant")
    return Families([
        Family("ec-variant-spread", "companion variant",
               "with both encoders pretrained, the narrow one shrinks the worst cluster's reconstructions",
               paired_checks(runs, "min_spread_ratio", claim=f"{{setting}}, both pretrained: hidden {wide} keeps "
                             f"more of the worst cluster's spread than hidden {narrow}", **common),
               phrases("With both encoders pretrained, the narrow one shrinks the worst cluster's reconstructions.",
                       "With both encoders pretrained, the narrow one kept more of the worst cluster's spread "
                       "somewhere.",
                       "Whether the narrow pretrained encoder shrinks the worst cluster cannot be decided at this "
                       "budget.",
                       "With both encoders pretrained, the worst cluster's spread differs by less than 0.05 "
                       "somewhere.")),
        Family("ec-variant-mse", "companion variant",
               "with both encoders pretrained, the narrow one reconstructs worse",
               paired_checks(runs, "mse", claim=f"{{setting}}, both pretrained: hidden {wide} gives a lower MSE "
                             f"than hidden {narrow}", higher_is_better=False, **common),
               phrases("With both encoders pretrained, the narrow one still reconstructs worse.",
                       "With both encoders pretrained, the narrow one reconstructed better somewhere.",
                       "Whether the narrow pretrained encoder reconstructs worse cannot be decided at this budget.",
                       "With both encoders pretrained, the two MSEs are within 10% of each other somewhere.")),
    ])


# ------------------------------------------------------------------ 05: SimVQ
#: "Near-full codebook use", the SimVQ paper's claim (100% from 1k to 262k codes on ImageNet),
#: made concrete: at least this fraction of the tokens used.
SIMVQ_FULL_USAGE = 0.9
SIMVQ = "SimVQ (Zhu, Li et al. 2024), abstract"


def _usage_checks(runs: Sequence, over: str, values: Iterable, label: str, metric: str = "usage") -> list:
    """Per setting: SimVQ's usage against the threshold, seed by seed (a threshold: no smallest effect)."""
    out = []
    for v in values:
        sel = select(runs, **{over: v}, quantizer="simvq", method="scratch")
        if not sel:
            continue
        setting = label.format(v)
        out.append(paired(claim_id(f"svq-usage-{setting}"),
                          f"{setting}: SimVQ uses at least {SIMVQ_FULL_USAGE:.0%} of its tokens",
                          [float(r.metrics[metric]) for r in sel], [SIMVQ_FULL_USAGE] * len(sel),
                          converged=convergence(sel, metric=metric, names=[f"SimVQ, {setting}"]), setting=setting,
                          labels=[r.config["seed"] for r in sel], unit=UNIT,
                          checkpoint=at_checkpoint(sel, sel, metric) and (at_checkpoint(sel, sel, metric)[0],
                                                                          [SIMVQ_FULL_USAGE] * len(sel))))
    return out


def _growth(runs: Sequence, metric: str, lo: int, hi: int, at_checkpoint_: bool = False,
            **where) -> tuple[list, list[float]]:
    """``(seeds, growth)``: per seed, ``metric`` at K = ``hi`` over K = ``lo`` (``at_checkpoint_``: of the
    values recorded at 3/4 of the final stage)."""
    seeds = _seeds(runs, codebook_size=lo, **where)
    if _seeds(runs, codebook_size=hi, **where) != seeds:
        raise ValueError(f"growth of {metric}: the runs {where} have other seeds at K = {lo:,} and K = {hi:,}")

    def value(k, s):
        run = _one(runs, codebook_size=k, seed=s, **where)
        return float((run.checkpoint["metrics"] if at_checkpoint_ else run.metrics)[metric])

    return seeds, [value(hi, s) / value(lo, s) for s in seeds]


def simvq(runs: Sequence, cifar_runs: Sequence, dims: Sequence[int], sizes: Sequence[int], narrow: int,
          wide: int) -> Families:
    """SimVQ's own claims and the companion's questions, each its own family (never summed).

    ``runs``: every synthetic run of notebook 05 (SimVQ at both widths and with pretraining,
    EMA-VQ from scratch and pretrained); ``cifar_runs``: the CIFAR-10 sweep of all recipes.
    SimVQ's rise with K is compared with EMA-VQ from scratch's own rise (a collapsing EMA-VQ
    also uses a few more codes at a larger codebook); tokens collapse is judged on the
    perplexity of token use.
    """
    simvq_ = {"quantizer": "simvq", "method": "scratch", "encoder_hidden": wide}
    ema_scratch = {"quantizer": "ema", "method": "scratch"}
    sizes = sorted(set(sizes))
    syn = dict(over="dim", values=dims, label="{}-D", id_prefix="svq")
    cif = dict(over="codebook_size", values=sizes, label="K = {:,}", id_prefix="svq-cifar")
    q_use = "resolving the collapse issue in VQ models with just one linear layer"
    q_scale = "[collapse] leads to low codebook utilization and limits the scalability of the codebook"
    fams = Families([
        Family("svq-own-usage", SIMVQ,
               f"SimVQ uses nearly its whole codebook (at least {SIMVQ_FULL_USAGE:.0%} of the tokens)",
               _usage_checks(select(runs, encoder_hidden=wide), "dim", dims, "{}-D")
               + _usage_checks(cifar_runs, "codebook_size", sizes, "K = {:,}"),
               phrases("SimVQ uses nearly its whole codebook in every setting, as its authors report.",
                       "SimVQ used less than nearly its whole codebook somewhere.",
                       "Whether SimVQ uses nearly its whole codebook cannot be decided at this budget."),
               quote=q_use),
        Family("svq-eases-tokens", "companion question",
               "SimVQ eases tokens collapse: it uses its tokens more uniformly (a higher perplexity) than EMA-VQ "
               "from scratch",
               paired_checks(runs, "perplexity", better=simvq_, worse=ema_scratch,
                             claim="{setting}: SimVQ gives a higher perplexity of token use than EMA-VQ from scratch",
                             **syn)
               + paired_checks(cifar_runs, "perplexity", better={"quantizer": "simvq"}, worse=ema_scratch,
                               claim="{setting}: SimVQ gives a higher perplexity than EMA-VQ from scratch", **cif),
               phrases("SimVQ eases tokens collapse: it uses its tokens more uniformly than EMA-VQ from scratch in "
                       "every setting.",
                       "SimVQ used its tokens less uniformly than EMA-VQ from scratch somewhere.",
                       "Whether SimVQ eases tokens collapse cannot be decided at this budget.",
                       "SimVQ's perplexity is within 10% of EMA-VQ from scratch's somewhere: no easing there.")),
        Family("svq-plus-pretraining", "companion question",
               "pretraining the autoencoder before SimVQ makes token use more uniform (a higher perplexity)",
               paired_checks(runs, "perplexity", better={"quantizer": "simvq", "method": "pretrained"},
                             worse=simvq_, claim="{setting}: SimVQ after pretraining gives a higher perplexity than "
                             "SimVQ from scratch", **{**syn, "id_prefix": "svq-pre"}),
               phrases("Pretraining before SimVQ makes token use more uniform: the two remedies add up.",
                       "Pretraining before SimVQ made token use less uniform somewhere.",
                       "Whether pretraining adds anything to SimVQ cannot be decided at this budget.",
                       "Pretraining before SimVQ changes its perplexity by less than 10% somewhere: it adds nothing "
                       "there.")),
    ])
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        span = f"K = {lo:,} to {hi:,}"
        s_seeds, s_growth = _growth(cifar_runs, "codes_used", lo, hi, quantizer="simvq", method="scratch")
        e_seeds, e_growth = _growth(cifar_runs, "codes_used", lo, hi, **ema_scratch)
        if s_seeds != e_seeds:
            raise ValueError(f"svq-own-rising: SimVQ has seeds {s_seeds}, EMA-VQ from scratch {e_seeds}")
        groups = [select(cifar_runs, codebook_size=k, **w) for w in ({"quantizer": "simvq"}, ema_scratch)
                  for k in (lo, hi)]
        names = [f"{name}, K = {k:,}" for name in ("SimVQ", "EMA-VQ scratch") for k in (lo, hi)]
        checkpoint = None
        if all(at_checkpoint(g, g, "codes_used") for g in groups):
            checkpoint = (_growth(cifar_runs, "codes_used", lo, hi, True, quantizer="simvq", method="scratch")[1],
                          _growth(cifar_runs, "codes_used", lo, hi, True, **ema_scratch)[1])
        fams.insert(1, Family(
            "svq-own-rising", SIMVQ, "SimVQ's codebook use grows with the codebook size more than EMA-VQ from "
            "scratch's does",
            [paired(f"svq-codes-growth-k{lo}-k{hi}", f"{span}: SimVQ's codes used grow by a larger factor than "
                    f"EMA-VQ from scratch's", s_growth, e_growth, metric="codes_used_growth", labels=s_seeds,
                    unit=UNIT, converged=convergence(*groups, metric="codes_used", names=names), setting=span,
                    checkpoint=checkpoint)],
            phrases(f"SimVQ's codebook use grows with the codebook size ({span}) by a larger factor than EMA-VQ "
                    f"from scratch's.",
                    f"SimVQ's codebook use grew by a smaller factor than EMA-VQ from scratch's ({span}).",
                    "Whether SimVQ's codebook use grows faster with the codebook size than EMA-VQ's cannot be "
                    "decided at this budget.",
                    f"SimVQ's codebook use grows by about the same factor as EMA-VQ from scratch's ({span}, within "
                    f"10%)."),
            quote=q_scale))
    else:
        fams.left_out.append(LeftOut(
            "svq-own-rising", SIMVQ, "SimVQ's codebook use grows with the codebook size",
            f"A rise with the codebook size needs at least two CIFAR-10 codebook sizes: this run has "
            f"{_sizes_text(sizes)} only.", quote=q_scale))
    if narrow != wide:
        fams.append(Family(
            "svq-embeddings-persist", "companion question",
            f"embeddings collapse persists under SimVQ: a narrow encoder (hidden {narrow}) still spreads its "
            f"embeddings over fewer directions than a wide one (hidden {wide})",
            paired_checks(runs, "participation_ratio", better={"quantizer": "simvq", "method": "scratch",
                                                                "encoder_hidden": wide},
                          worse={"quantizer": "simvq", "method": "scratch", "encoder_hidden": narrow},
                          claim=f"{{setting}}, SimVQ: hidden {wide} gives a higher participation ratio than "
                          f"hidden {narrow}", **{**syn, "id_prefix": "svq-emb"}),
            phrases("Embeddings collapse persists under SimVQ: it moves the tokens, not the encoder outputs.",
                    "Under SimVQ the narrow encoder's embeddings occupied more directions than the wide one's "
                    "somewhere.",
                    "Whether embeddings collapse persists under SimVQ cannot be decided at this budget.",
                    "Under SimVQ the two encoders' embeddings occupy about as many directions somewhere (within "
                    "0.05): no embeddings collapse there.")))
    else:
        fams.left_out.append(LeftOut(
            "svq-embeddings-persist", "companion question", "embeddings collapse persists under SimVQ",
            f"Narrow against wide needs two encoder widths: this run has encoder_hiddens = [{wide}] only."))
    return fams


# ------------------------------------------------------------------ 06: each recipe against the baseline
#: The collapses a recipe is checked on, with the metric of its one check per setting. Tokens
#: collapse: the perplexity of token use over the whole set (how many tokens are effectively in
#: use; the paper's Fig. 4 measure), per data dimension on the synthetic data (encoder hidden 32)
#: and per codebook size on CIFAR-10. Embeddings collapse: the participation ratio of the
#: embeddings of the *narrow* encoder (the paper's §3.2 symptom, notebook 04), per data dimension.
COLLAPSES = {
    "tokens": dict(name="tokens collapse", data="synthetic", metric="perplexity", over="dim", label="{}-D",
                   what="uses its tokens more evenly (a higher perplexity) than EMA-VQ from scratch"),
    "tokens-cifar": dict(name="tokens collapse", data="CIFAR-10", metric="perplexity", over="codebook_size",
                         label="K = {:,}", what="uses its tokens more evenly (a higher perplexity, training "
                                            "images) than EMA-VQ from scratch"),
    "embeddings": dict(name="embeddings collapse", data="synthetic", metric="participation_ratio", over="dim",
                       label="{}-D, narrow encoder",
                       what="gives the narrow encoder's embeddings more effective dimensions (a higher "
                            "participation ratio) than EMA-VQ from scratch with the same encoder"),
}


def _by(runs: Sequence, over: str) -> dict:
    """``{(setting value, seed): run}`` (the pairs of a check line up on these keys)."""
    return {(r.config[over], r.config["seed"]): r for r in runs}


def remedy_families(runs: dict, collapse: str, baseline: str = BASELINE) -> list:
    """One ``claims.Family`` per recipe (other than ``baseline``) for one collapse of ``COLLAPSES``.

    ``runs`` is ``{recipe: runs}`` (``experiments.remedy_runs``). Each family has one check per
    setting (data dimension or codebook size): the recipe's metric against the baseline's, seed
    by seed; inconclusive when a run compared had not converged or the effect still moved
    (``claims.convergence``, ``claims.settled``), as in notebooks 02-05.
    """
    if collapse not in COLLAPSES:
        raise ConfigError(f"collapse must be one of {list(COLLAPSES)}, got {collapse!r}")
    spec = COLLAPSES[collapse]
    if baseline not in runs:
        raise ConfigError(f"the recipes {list(runs)} must include the baseline {baseline!r}")
    base = _by(runs[baseline], spec["over"])
    families = []
    for name, rs in runs.items():
        if name == baseline:
            continue
        label = parse_remedy(name).label
        mine = _by(rs, spec["over"])
        checks = []
        for value in sorted({v for v, _ in mine}):
            pairs = sorted(k for k in mine if k[0] == value and k in base)
            if not pairs:
                continue
            setting = spec["label"].format(value)
            b, w = [mine[k] for k in pairs], [base[k] for k in pairs]
            ok = convergence(b, w, metric=spec["metric"],
                             names=[f"{label}, {setting}", f"{parse_remedy(baseline).label}, {setting}"])
            checks.append(paired(
                claim_id(f"rem-{collapse}-{key(name)}-{setting}"),
                f"{setting}: {label} {spec['what']}",
                [float(mine[k].metrics[spec["metric"]]) for k in pairs],
                [float(base[k].metrics[spec["metric"]]) for k in pairs], converged=ok, setting=setting,
                metric=spec["metric"], labels=[k[1] for k in pairs], unit=UNIT,
                codebook_size=mine[pairs[0]].config.get("codebook_size"),
                checkpoint=at_checkpoint(b, w, spec["metric"])))
        if not checks:
            raise ConfigError(f"recipe {name!r} has no run that pairs with the baseline's for {collapse!r} "
                              f"(same {spec['over']} and seed)")
        what = f"{spec['name']} ({spec['data']})"
        families.append(Family(
            f"rem-{collapse}-{key(name)}", "companion question", f"{label}: {spec['what']}", checks,
            phrases(f"{label} eases {what}: it {spec['what']} in every setting.",
                    f"{label} does worse than EMA-VQ from scratch on {what} in at least one setting.",
                    f"Whether {label} eases {what} cannot be decided at this budget.",
                    f"{label} does not ease {what}: in at least one setting it differs from EMA-VQ from scratch "
                    f"by less than the smallest effect of interest.")))
    return families


def verdict_grid(families_by_collapse: dict):
    """Recipes x collapses, each cell the family's outcome (a DataFrame for the book)."""
    import pandas as pd  # heavy: only notebooks show tables

    rows: dict = {}
    for collapse, families in families_by_collapse.items():
        spec = COLLAPSES[collapse]
        for f in families:
            name = f.paper.split(": ", 1)[0]
            rows.setdefault(name, {"remedy": name})[f"{spec['name']}, {spec['data']}"] = f.outcome
    return pd.DataFrame(list(rows.values())).fillna("not run")


#: The columns of notebook 06's heat map (``plots.plot_remedy_heatmap``): (collapse set, metric, higher is better). ``tokens``: encoder hidden
#: 32 on the synthetic data; ``narrow``: the narrow encoder; ``cifar``: the CIFAR-10 runs.
HEATMAP_COLUMNS = (
    ("tokens", "usage", True), ("tokens", "perplexity", True), ("tokens", "alloc_entropy", True),
    ("tokens", "min_tokens_per_cluster", True), ("tokens", "coverage", True), ("tokens", "mse", False),
    ("narrow", "participation_ratio", True), ("narrow", "coverage", True), ("narrow", "mse", False),
    ("cifar", "perplexity", True), ("cifar", "test_mse", False),
)
_SET_TITLES = {"tokens": "synthetic", "narrow": "synthetic, narrow encoder", "cifar": "CIFAR-10"}


def effect_grid(runs_by_set: dict, baseline: str = BASELINE, columns=HEATMAP_COLUMNS) -> list[dict]:
    """Per recipe and heat-map column: the paired effect against the baseline, relative to the baseline.

    ``runs_by_set`` maps ``"tokens"``, ``"narrow"``, ``"cifar"`` to ``{recipe: runs}`` (a set may
    be missing). Pairs are (setting, seed) over all settings of the set: ``effect`` is the mean
    paired difference signed so that positive is better, ``relative`` that divided by the
    baseline's mean magnitude, ``low``/``high`` the 95% interval (``claims.paired_interval``)
    relative too, ``decided`` whether the interval excludes zero with at least 2 pairs.
    """
    out = []
    for set_name, metric, higher in columns:
        by_recipe = runs_by_set.get(set_name)
        if not by_recipe or baseline not in by_recipe:
            continue
        over = "codebook_size" if set_name == "cifar" else "dim"
        base = _by(by_recipe[baseline], over)
        for name, rs in by_recipe.items():
            if name == baseline:
                continue
            mine = _by(rs, over)
            pairs = sorted(k for k in mine if k in base)
            if not pairs:
                continue
            sign = 1.0 if higher else -1.0
            diffs = [sign * (float(mine[k].metrics[metric]) - float(base[k].metrics[metric])) for k in pairs]
            effect, low, high = paired_interval(diffs)
            scale = abs(sum(float(base[k].metrics[metric]) for k in pairs) / len(pairs)) or 1.0
            out.append({"remedy": parse_remedy(name).label, "set": _SET_TITLES[set_name], "metric": metric,
                        "higher_is_better": higher, "pairs": len(pairs), "effect": effect,
                        "relative": effect / scale, "low": low / scale, "high": high / scale,
                        "decided": len(pairs) >= MIN_PAIRS and (low > 0 or high < 0)})
    return out


def which_sentence(families: Sequence, collapse: str) -> str:
    """One sentence per collapse, from the families' outcomes: which recipes held, which did not, which are open."""
    spec = COLLAPSES[collapse]
    title = f"{spec['name'].capitalize()} ({spec['data']})"
    if not families:
        return f"{title}: no recipe besides the baseline was run."
    groups = {o: [f.paper.split(": ", 1)[0] for f in families if f.outcome == o] for o in OUTCOMES}
    parts = [f"{o} for {', '.join(names)}" for o, names in groups.items() if names]
    return f"{title}, each recipe against EMA-VQ from scratch: {'; '.join(parts)}."


def not_run_sentence(collapse: str, why: str) -> str:
    """The sentence of a collapse whose runs this execution left out (``why``: the parameter that did)."""
    spec = COLLAPSES[collapse]
    return f"{spec['name'].capitalize()} ({spec['data']}): not run in this execution ({why})."


def library_run_sentence(families_by_collapse: dict) -> str:
    """The ``lib`` recipe's verdicts (the library's EMA-VQ with our settings against ours), as a sentence."""
    found = [(COLLAPSES[c], f) for c, fs in families_by_collapse.items() for f in fs if f.id == f"rem-{c}-lib"]
    if not found:
        return "This execution did not run the `lib` recipe, so whole runs of the two EMA-VQs were not compared."
    return ("On whole training runs, the library's EMA-VQ with our settings against ours: "
            + "; ".join(f"{spec['name']} ({spec['data']}), {f.verdict}" for spec, f in found) + ".")


# ------------------------------------------------------------------ summaries of verdicts
def _family_name(f: Family, suffix: str = "") -> str:
    """A family's id without its notebook prefix and ablation suffix: "tcs-worst-cluster-laplace" -> "worst-cluster"."""
    name = f.id[: -len(suffix)] if suffix and f.id.endswith(suffix) else f.id
    return name.split("-", 1)[1] if "-" in name else name


def _outcome_text(c) -> str:
    """A check's outcome in a few words: "held", "not held (no effect)", "inconclusive (not converged)"."""
    if c.outcome == NOT_HELD:
        return f"not held ({c.decision_text})"
    if c.outcome == INCONCLUSIVE and not c.converged:
        return "inconclusive (not converged)"
    return c.outcome


def ablation_sentence(base: Sequence[Family], variant: Sequence[Family], what: str, base_name: str = "eq. (5)",
                      suffix: str = "-laplace") -> str:
    """What the decided evidence says about an ablation, check by check (e.g. eq. (5) against the Laplace update).

    Families are matched by id (``variant``'s carry ``suffix``), checks by setting. A check
    decided alike under both is counted; one that differs is named with both outcomes ("3-D
    worst-cluster: held with eq. (5), inconclusive with the Laplace-smoothed update"); checks
    undecided under both are counted apart, because they show nothing either way. "The verdicts
    do not depend on the update" is said only when every check is decided under both and alike.
    """
    by_id = {f.id: f for f in variant}
    same, differ, open_, missing = 0, [], 0, []
    for b in base:
        v = by_id.get(b.id + suffix)
        if v is None:
            missing.append(b.id)
            continue
        v_checks = {c.setting: c for c in v.checks}
        for c in b.checks:
            d = v_checks.get(c.setting)
            if d is None:
                missing.append(f"{c.setting} {_family_name(b)}")
            elif c.outcome == d.outcome == INCONCLUSIVE:
                open_ += 1
            elif c.outcome == d.outcome and c.decision == d.decision:
                same += 1
            else:
                differ.append(f"{c.setting} {_family_name(b)}: {_outcome_text(c)} with {base_name}, "
                              f"{_outcome_text(d)} with {what}")
    total = same + len(differ) + open_
    if not total:
        return f"No check of {base_name} has a counterpart with {what}."
    parts = []
    if not differ and not open_:
        parts.append(f"Every one of the {total} checks is decided alike with {base_name} and with {what}: here the "
                     f"verdicts do not depend on the update")
    else:
        parts.append(f"Check by check, {base_name} against {what}: {same} of {total} decided alike")
        if differ:
            parts.append(f"{len(differ)} came out differently ({'; '.join(differ)})")
        if open_:
            parts.append(f"{open_} undecided under both, which shows nothing either way")
    if missing:
        parts.append(f"not compared: {', '.join(missing)}")
    return "; ".join(parts) + "."


# ------------------------------------------------------------------ the results page
def claims_overview(families_by_notebook: dict):
    """One table of every notebook's claims (the results page): notebook, then ``claims.overview``'s columns.

    ``families_by_notebook``: ``{notebook: families}``, each a :class:`claims.Families` (its
    left-out families included), a list of families, or the recorded dicts of a claims figure
    (``results`` JSON ``values``). Columns: notebook, claim, source, quote, outcome, decision,
    effect, interval, n, n for 80%, n for 95%, why undecided / what would decide it.
    """
    import pandas as pd  # heavy: only notebooks and the book show tables

    frames = []
    for notebook, families in families_by_notebook.items():
        items = list(families.values()) if isinstance(families, dict) else families
        frame = overview(items)
        frame.insert(0, "notebook", notebook)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def recorded_families(directory=None) -> dict:
    """``{notebook: [family dict, ...]}`` from every claims figure recorded in ``directory`` (default
    ``paths.RESULTS``), left-out families included, in notebook order: what :func:`claims_overview` and
    :func:`paper_claims_count` take to gather the whole book's claims after the notebooks ran."""
    out: dict = {}
    for record in load_results(directory).values():
        values = record.get("values")
        if not isinstance(values, dict) or not values:
            continue
        if all(isinstance(v, dict) and "outcome" in v and ("checks" in v or "why" in v) for v in values.values()):
            out.setdefault(record.get("notebook", "?"), []).extend(values.values())
    return dict(sorted(out.items()))


def paper_claims_count(families_by_notebook: dict) -> dict:
    """The paper's claims over notebooks, by outcome (``claims.paper_count``): its ``text`` reads
    "N of M claims of the paper held, K not held, J undecided"."""
    items = []
    for families in families_by_notebook.values():
        items += list(families.values()) if isinstance(families, dict) else list(families)
        items += list(getattr(families, "left_out", []))
    return paper_count(items)
