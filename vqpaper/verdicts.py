"""The paper's claims, one :class:`claims.Family` per sentence, as functions of the runs (notebooks 01-06).

Each function takes the runs a notebook trained (or the tables made from them) and returns families
whose checks all point the way the paper's sentence does; the notebook publishes them
(``claims.publish``) and glues each family's phrase into its prose. Being functions of the runs,
they are tested with fabricated runs where they must hold and where they must fail
(tests/test_verdicts.py). Sentences that summarise verdicts (:func:`ablation_sentence`,
:func:`which_sentence`) are computed here too, from the families, never typed next to them.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

from .claims import (HELD, INCONCLUSIVE, MIN_PAIRS, NOT_HELD, OUTCOMES, Family, convergence, converged, paired,
                     paired_interval)
from .errors import ConfigError
from .experiments import per_seed_ratio, select
from .recipes import BASELINE, key, parse_remedy


def phrases(held: str, not_held: str, inconclusive: str) -> dict:
    """The book's sentence for each outcome of a family."""
    return {HELD: held, NOT_HELD: not_held, INCONCLUSIVE: inconclusive}


def claim_id(text: str) -> str:
    """A check's id (a glue key) from words: ``"tcs-coverage-K = 4,096"`` -> ``"tcs-coverage-k4096"``."""
    return text.lower().replace(" ", "").replace(",", "").replace("=", "")


def _dims_text(dims: Iterable[int]) -> str:
    dims = [f"{d}-D" for d in dims]
    return dims[0] if len(dims) == 1 else ", ".join(dims[:-1]) + " and " + dims[-1]


# ------------------------------------------------------------------ paired checks over settings
def runs_converged(results: Sequence, **where) -> bool:
    """Whether every selected run's final training loss has flattened (``claims.converged``)."""
    return all(converged(r.history) for r in select(results, **where))


def paired_checks(results: Sequence, metric: str, *, better: dict, worse: dict, over: str, values: Iterable,
                  label: str, claim: str, higher_is_better: bool = True, id_prefix: str = "",
                  worse_results: Optional[Sequence] = None) -> list:
    """One ``claims.paired`` check per value of ``over`` (e.g. per dim): ``better`` vs ``worse`` seed by seed.

    ``better``/``worse`` select runs (e.g. ``{"method": "pretrained"}``); ``label`` formats the
    setting (``"{}-D"``), ``claim`` the statement (``"{setting}: pretraining gives ..."``). The
    metric's smallest effect comes from ``claims.EFFECTS``; pairs are seeds, the same on both
    sides. A check is inconclusive when any run it compares had not converged
    (``claims.convergence``: every stage's loss, and the metric's drift where recorded).
    ``worse_results``: take the ``worse`` runs from another list (e.g. another quantizer's runs).
    """
    other = results if worse_results is None else worse_results
    out = []
    for value in values:
        setting = label.format(value)
        b = select(results, **{over: value}, **better)
        w = select(other, **{over: value}, **worse)
        seeds = [r.config["seed"] for r in b]
        if seeds != [r.config["seed"] for r in w]:
            raise ValueError(f"{setting}: the runs compared for {metric} must have the same seeds on both sides, got "
                             f"{seeds} and {[r.config['seed'] for r in w]}")
        sizes = {r.config.get("codebook_size") for r in b + w}
        out.append(paired(claim_id(f"{id_prefix}-{metric.replace('_', '-')}-{setting}"), claim.format(setting=setting),
                          [float(r.metrics[metric]) for r in b], [float(r.metrics[metric]) for r in w],
                          higher_is_better=higher_is_better, converged=convergence(b, w, metric=metric),
                          setting=setting, metric=metric, labels=seeds,
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


# ------------------------------------------------------------------ 01: Fig. 2
def encoder_output_families(per_run: Sequence[dict], per_coordinate: Sequence[dict], ratio: float = 5) -> list:
    """The claims of Fig. 2 as ``claims.Family``s (01 §6), from ``experiments.encoder_output_rows`` and
    ``experiments.encoder_output_coordinates`` of the same runs.

    * range: per seed, the trained encoder's outputs span at least ``ratio`` times the range of
      the untrained encoder's (the paper's "relatively small range", made concrete);
    * fewer peaks: per seed and coordinate, the untrained encoder's outputs show fewer KDE peaks
      than the input's same coordinate (Fig. 2 (a));
    * as many peaks: per seed and coordinate, the trained encoder's outputs show at least as many
      peaks as the input's (Fig. 2 (b); ``peaks > input - 1``, so "more" passes and "fewer" fails).
    """
    def pick(rows_, encoder):
        return sorted((r for r in rows_ if r["encoder"] == encoder), key=lambda r: (r["seed"], r.get("coordinate", 0)))

    u_run, t_run = pick(per_run, "untrained"), pick(per_run, "trained")
    u_co, t_co = pick(per_coordinate, "untrained"), pick(per_coordinate, "trained")
    if [r["seed"] for r in u_run] != [r["seed"] for r in t_run] or len(u_co) != len(t_co):
        raise ValueError("encoder_output_families: need one untrained and one trained run per seed")
    return [
        Family("pre-range-narrower", "§3.1.1, Fig. 2 (a)",
               "the untrained encoder's outputs cluster in a much narrower range than the trained encoder's",
               [paired("pre-range-ratio", f"per seed: the trained encoder's outputs span at least {ratio:g} "
                       f"times the range of the untrained encoder's", [r["range"] for r in t_run],
                       [ratio * r["range"] for r in u_run], setting=f"range ratio ≥ {ratio:g}")],
               {HELD: f"The untrained encoder's outputs span a range at least {ratio:g} times narrower than the "
                      f"trained encoder's, as in the paper's Fig. 2.",
                NOT_HELD: f"The untrained encoder's outputs do not span a range {ratio:g} times narrower than the "
                          f"trained encoder's here, unlike the paper's Fig. 2.",
                INCONCLUSIVE: f"Whether the untrained encoder's outputs span a range {ratio:g} times narrower than the "
                              f"trained encoder's cannot be decided from these seeds."}),
        Family("pre-untrained-fewer-peaks", "§3.1.1, Fig. 2 (a)",
               "the untrained encoder's outputs show fewer peaks than the input",
               [paired("pre-untrained-fewer-peaks-than-input", "per seed and coordinate: the untrained encoder's "
                       "outputs show fewer KDE peaks than the input's same coordinate", [r["peaks"] for r in u_co],
                       [r["input peaks"] for r in u_co], higher_is_better=False, setting="seeds × coordinates")],
               {HELD: "The untrained encoder's outputs show fewer peaks than the input, coordinate by coordinate, "
                      "as the paper's Fig. 2 (a) says: it merges some of the input's modes.",
                NOT_HELD: "The untrained encoder's outputs do not show fewer peaks than the input here: the merged "
                          "modes of the paper's Fig. 2 (a) are not seen in the peak counts.",
                INCONCLUSIVE: "Whether the untrained encoder's outputs show fewer peaks than the input cannot be "
                              "decided from these seeds and coordinates (the table of checks gives the interval)."}),
        Family("pre-trained-peaks-match-input", "§3.1.1, Fig. 2 (b)",
               "the trained encoder's outputs show as many peaks as the input",
               [paired("pre-trained-at-least-input-peaks", "per seed and coordinate: the trained encoder's outputs "
                       "show at least as many KDE peaks as the input's same coordinate", [r["peaks"] for r in t_co],
                       [r["input peaks"] - 1 for r in t_co], setting="seeds × coordinates")],
               {HELD: "The trained encoder's outputs show at least as many peaks as the input, coordinate by "
                      "coordinate, as the paper's Fig. 2 (b) says: pretraining keeps the input's modes apart.",
                NOT_HELD: "The trained encoder's outputs show fewer peaks than the input here, unlike the paper's "
                          "Fig. 2 (b).",
                INCONCLUSIVE: "Whether the trained encoder's outputs show as many peaks as the input cannot be decided "
                              "from these seeds and coordinates (the table of checks gives the interval)."}),
    ]


# ------------------------------------------------------------------ 02: tokens collapse, synthetic
def tokens_collapse_synthetic(runs: Sequence, dims: Sequence[int], suffix: str = "", note: str = "") -> list[Family]:
    """§3.1.1, Fig. 3: pretraining, then VQ, against a VQ-VAE from scratch (same quantizer).

    ``suffix``/``note`` tell apart an ablation (e.g. ``"-laplace"``, ``" (Laplace-smoothed update)"``).
    """
    where = _dims_text(dims)
    pre, scr = {"method": "pretrained"}, {"method": "scratch"}
    common = dict(better=pre, worse=scr, over="dim", values=dims, label="{}-D")
    return [
        Family(
            f"tcs-uniform{suffix}", "§3.1.1, Fig. 3",
            f"with pretraining the tokens are spread more evenly over the clusters of the data{note}",
            paired_checks(runs, "alloc_entropy", claim="{setting}: pretraining gives a higher allocation entropy "
                          "than scratch", id_prefix=f"tcs{suffix}", **common),
            phrases(f"With pretraining the tokens are spread more evenly over the clusters than from scratch, "
                    f"in {where}{note}.",
                    f"Pretraining did not spread the tokens more evenly over the clusters in every dimension "
                    f"tested{note}; the table below shows where it failed.",
                    f"Whether pretraining spreads the tokens more evenly over the clusters cannot be decided "
                    f"at this budget{note}; the table below says why.")),
        Family(
            f"tcs-worst-cluster{suffix}", "§3.1.1, Fig. 3 (a), (c), (e)",
            f"from scratch some clusters are left with few tokens; pretraining gives the worst-served "
            f"cluster more{note}",
            paired_checks(runs, "min_tokens_per_cluster", claim="{setting}: pretraining gives the worst-served "
                          "cluster more tokens than scratch", id_prefix=f"tcs{suffix}", **common),
            phrases(f"The worst-served cluster gets more tokens with pretraining than from scratch, in {where}{note}.",
                    f"Pretraining did not give the worst-served cluster more tokens in every dimension "
                    f"tested{note}.",
                    f"Whether pretraining gives the worst-served cluster more tokens cannot be decided at "
                    f"this budget{note}.")),
        Family(
            f"tcs-coverage{suffix}", "§3.1.1, Fig. 3",
            f"with pretraining the reconstructions cover the data better{note}",
            paired_checks(runs, "coverage", claim="{setting}: pretraining gives a higher coverage than scratch",
                          id_prefix=f"tcs{suffix}", **common),
            phrases(f"With pretraining the reconstructions cover more of the data than from scratch, in {where}{note}.",
                    f"Pretraining did not improve the coverage of the data in every dimension tested{note}.",
                    f"Whether pretraining improves the coverage of the data cannot be decided at this "
                    f"budget{note}.")),
    ]


# ------------------------------------------------------------------ 03: tokens collapse, CIFAR-10
def large_codebooks(sizes: Sequence[int]) -> list[int]:
    """The codebook sizes the paper calls large (2^12 and up), else the largest one run."""
    sizes = sorted(sizes)
    return [k for k in sizes if k >= 2**12] or [sizes[-1]]


def tokens_collapse_cifar(runs: Sequence, sizes: Sequence[int]) -> list[Family]:
    """§3.1.2, Fig. 4: the codebook sweep, pretrained against scratch."""
    sizes = sorted(sizes)
    large, k_min, k_mid, k_max = large_codebooks(sizes), sizes[0], sizes[len(sizes) // 2], sizes[-1]
    pre, scr = {"method": "pretrained"}, {"method": "scratch"}
    at_large = dict(better=pre, worse=scr, over="codebook_size", values=large, label="K = {:,}", id_prefix="tcc")
    ok = runs_converged(select(runs, codebook_size=k_max)) and runs_converged(select(runs, codebook_size=k_mid))
    growth = {m: per_seed_ratio(runs, "perplexity", "codebook_size", k_max, k_mid, method=m)
              for m in ("scratch", "pretrained")}
    span = f"K = {k_mid:,} to {k_max:,}"
    return [
        Family("tcc-large-perplexity", "§3.1.2, Fig. 4",
               "at large codebooks the pretrained model uses its tokens more (higher perplexity) than the one "
               "trained from scratch",
               paired_checks(runs, "perplexity", claim="{setting}: pretraining gives a higher perplexity than "
                             "scratch", **at_large),
               phrases("At large codebooks pretraining gives a higher codebook perplexity than training from "
                       "scratch.",
                       "At large codebooks pretraining did not give a higher codebook perplexity.",
                       "Whether pretraining gives a higher perplexity at large codebooks cannot be decided at "
                       "this budget.")),
        Family("tcc-large-mse", "§3.1.2, Fig. 4",
               "at large codebooks the pretrained model reconstructs better (lower test MSE)",
               paired_checks(runs, "test_mse", claim="{setting}: pretraining gives a lower test MSE than scratch",
                             higher_is_better=False, **at_large),
               phrases("At large codebooks pretraining gives a lower test MSE than training from scratch.",
                       "At large codebooks pretraining did not lower the test MSE.",
                       "Whether pretraining lowers the test MSE at large codebooks cannot be decided at this "
                       "budget.")),
        Family("tcc-pretrained-rising", "§3.1.2, Fig. 4",
               "the pretrained model's perplexity keeps increasing with the codebook size",
               [paired(f"tcc-rising-k{k_mid}-k{k_max}", f"{span}: the pretrained perplexity increases",
                       [float(r.metrics["perplexity"]) for r in select(runs, codebook_size=k_max, **pre)],
                       [float(r.metrics["perplexity"]) for r in select(runs, codebook_size=k_mid, **pre)],
                       converged=ok, setting=span)],
               phrases("The pretrained model's perplexity keeps rising with the codebook size.",
                       "The pretrained model's perplexity did not keep rising with the codebook size.",
                       "Whether the pretrained perplexity keeps rising cannot be decided at this budget.")),
        Family("tcc-scratch-stagnates", "§3.1.2, Fig. 4",
               "from scratch the perplexity stagnates: it grows by a smaller factor than the pretrained one",
               [paired(f"tcc-growth-k{k_mid}-k{k_max}", f"{span}: the scratch perplexity grows by a smaller "
                       "factor than the pretrained one", growth["pretrained"], growth["scratch"],
                       converged=ok, setting=span)],
               phrases("From scratch the perplexity stagnates while the pretrained one keeps growing.",
                       "The scratch perplexity grew at least as fast as the pretrained one.",
                       "Whether the scratch perplexity stagnates cannot be decided at this budget.")),
        Family("tcc-smallest-mse", "§3.1.2, Fig. 4",
               "at the smallest codebook pretraining is slightly worse (higher test MSE)",
               paired_checks(runs, "test_mse", better=pre, worse=scr, over="codebook_size", values=[k_min],
                             label="K = {:,}", id_prefix="tcc-smallest",
                             claim="{setting}: pretraining gives a higher test MSE than scratch"),
               phrases("At the smallest codebook pretraining is slightly worse, as the paper saw.",
                       "At the smallest codebook pretraining was not worse than training from scratch.",
                       "Whether pretraining is worse at the smallest codebook cannot be decided at this "
                       "budget.")),
    ]


# ------------------------------------------------------------------ 04: embeddings collapse
def embeddings_collapse(runs: Sequence, dims: Sequence[int], token_dims: Sequence[int], narrow: int,
                        wide: int) -> list[Family]:
    """§3.2, Fig. 5: a VQ-VAE from scratch with a narrow encoder against a wide one (paper set-up)."""
    where = _dims_text(dims)
    common = dict(better={"encoder_hidden": wide}, worse={"encoder_hidden": narrow}, over="dim", values=dims,
                  label="{}-D", id_prefix="ec")
    peak_dims = [d for d, t in zip(dims, token_dims) if t == 1]  # peaks of 1-D embeddings only
    families = [
        Family("ec-participation", "§3.2, Fig. 5",
               f"a narrow encoder (hidden {narrow}) collapses its embeddings onto fewer directions than a wide one "
               f"(hidden {wide})",
               paired_checks(runs, "participation_ratio", claim=f"{{setting}}: hidden {wide} gives a higher "
                             f"participation ratio of the embeddings than hidden {narrow}", **common),
               phrases(f"The narrow encoder's embeddings occupy fewer effective dimensions, in {where}.",
                       "The narrow encoder's embeddings did not occupy fewer effective dimensions in every "
                       "dimension tested.",
                       "Whether the narrow encoder's embeddings collapse onto fewer directions cannot be "
                       "decided at this budget.")),
        Family("ec-outside-data", "§3.2, Fig. 5 (a)",
               "with a narrow encoder some reconstructions fall outside the data (lower precision)",
               paired_checks(runs, "precision", claim=f"{{setting}}: hidden {wide} gives a higher precision "
                             f"(reconstructions inside the data) than hidden {narrow}", **common),
               phrases(f"With the narrow encoder more reconstructions fall outside the data, in {where}.",
                       "With the narrow encoder the reconstructions did not fall outside the data more often in "
                       "every dimension tested.",
                       "Whether the narrow encoder's reconstructions fall outside the data cannot be decided "
                       "at this budget.")),
        Family("ec-mse", "§3.2, Figs. 5 and 6",
               "a narrow encoder reconstructs worse (higher MSE)",
               paired_checks(runs, "mse", claim=f"{{setting}}: hidden {wide} gives a lower MSE than hidden "
                             f"{narrow}", higher_is_better=False, **common),
               phrases(f"The narrow encoder reconstructs worse, in {where}.",
                       "The narrow encoder did not reconstruct worse in every dimension tested.",
                       "Whether the narrow encoder reconstructs worse cannot be decided at this budget.")),
    ]
    if peak_dims:
        families.append(Family(
            "ec-merged-peaks", "§3.2, Fig. 5 (a)",
            "the narrow encoder's embedding histogram has its peaks merged (fewer peaks)",
            paired_checks(runs, "embedding_peaks", claim=f"{{setting}}: hidden {wide} gives more embedding "
                          f"histogram peaks than hidden {narrow}", **{**common, "values": peak_dims}),
            phrases("The narrow encoder's embedding histogram shows fewer, merged peaks.",
                    "The narrow encoder's embedding histogram did not show fewer peaks.",
                    "Whether the narrow encoder merges the peaks of its embeddings cannot be decided at "
                    "this budget.")))
    return families


def embeddings_collapse_cifar(runs: Sequence, widths: Sequence[int]) -> list[Family]:
    """§3.2, Fig. 6: the widest encoder against the narrowest one on CIFAR-10."""
    return [Family(
        "ec-cifar-mse", "§3.2, Fig. 6", "on CIFAR-10 a smaller encoder raises the test MSE",
        paired_checks(runs, "test_mse", better={"encoder_channels": widths[0]},
                      worse={"encoder_channels": widths[-1]}, over="codebook_size",
                      values=sorted({r.config["codebook_size"] for r in runs}), label="K = {:,}",
                      id_prefix="ec-cifar", higher_is_better=False,
                      claim=f"{{setting}}: {widths[0]} encoder channels give a lower test MSE than {widths[-1]}"),
        phrases("On CIFAR-10 the narrowest encoder has a higher test MSE than the widest.",
                "On CIFAR-10 the narrowest encoder did not have a higher test MSE than the widest.",
                "Whether a smaller encoder raises the CIFAR-10 test MSE cannot be decided at this budget."))]


def embeddings_collapse_pretrained(runs: Sequence, dims: Sequence[int], narrow: int, wide: int) -> list[Family]:
    """The companion's own variant (not a claim of the paper): both encoders pretrained, narrow vs wide."""
    common = dict(better={"encoder_hidden": wide}, worse={"encoder_hidden": narrow}, over="dim", values=dims,
                  label="{}-D", id_prefix="ec-variant")
    return [
        Family("ec-variant-spread", "companion variant of §3.2",
               "with both encoders pretrained, the narrow one shrinks the worst cluster's reconstructions",
               paired_checks(runs, "min_spread_ratio", claim=f"{{setting}}, both pretrained: hidden {wide} keeps "
                             f"more of the worst cluster's spread than hidden {narrow}", **common),
               phrases("With both encoders pretrained, the narrow one shrinks the worst cluster's reconstructions.",
                       "With both encoders pretrained, the narrow one did not shrink the worst cluster's "
                       "reconstructions in every dimension tested.",
                       "Whether the narrow pretrained encoder shrinks the worst cluster cannot be decided at "
                       "this budget.")),
        Family("ec-variant-mse", "companion variant of §3.2",
               "with both encoders pretrained, the narrow one reconstructs worse",
               paired_checks(runs, "mse", claim=f"{{setting}}, both pretrained: hidden {wide} gives a lower MSE "
                             f"than hidden {narrow}", higher_is_better=False, **common),
               phrases("With both encoders pretrained, the narrow one still reconstructs worse.",
                       "With both encoders pretrained, the narrow one did not reconstruct worse in every "
                       "dimension tested.",
                       "Whether the narrow pretrained encoder reconstructs worse cannot be decided at this "
                       "budget.")),
    ]


# ------------------------------------------------------------------ 05: SimVQ
#: "Near-full codebook use", the SimVQ paper's claim (100% from 1k to 262k codes on ImageNet),
#: made concrete: at least this fraction of the tokens used.
SIMVQ_FULL_USAGE = 0.9


def _usage_checks(runs: Sequence, over: str, values: Iterable, label: str, metric: str = "usage") -> list:
    out = []
    for v in values:
        sel = select(runs, **{over: v}, quantizer="simvq", method="scratch")
        if not sel:
            continue
        setting = label.format(v)
        out.append(paired(claim_id(f"svq-usage-{setting}"),
                          f"{setting}: SimVQ uses at least {SIMVQ_FULL_USAGE:.0%} of its tokens",
                          [float(r.metrics[metric]) for r in sel], [SIMVQ_FULL_USAGE] * len(sel),
                          converged=runs_converged(sel), setting=setting))
    return out


def simvq(runs: Sequence, cifar_runs: Sequence, dims: Sequence[int], sizes: Sequence[int], narrow: int,
          wide: int) -> list[Family]:
    """SimVQ's own claim and the companion's questions, each its own family (never summed).

    ``runs``: every synthetic run of notebook 05 (SimVQ at both widths and with pretraining,
    EMA-VQ from scratch and pretrained); ``cifar_runs``: the CIFAR-10 sweep of all recipes.
    """
    simvq_ = {"quantizer": "simvq", "method": "scratch", "encoder_hidden": wide}
    ema_scratch = {"quantizer": "ema", "method": "scratch"}
    sizes = sorted(sizes)
    syn = dict(over="dim", values=dims, label="{}-D", id_prefix="svq")
    cif = dict(over="codebook_size", values=sizes, label="K = {:,}", id_prefix="svq-cifar")
    families = [
        Family("svq-own-usage", "SimVQ (Zhu, Li et al. 2024), abstract",
               f"SimVQ uses nearly its whole codebook (at least {SIMVQ_FULL_USAGE:.0%} of the tokens)",
               _usage_checks(select(runs, encoder_hidden=wide), "dim", dims, "{}-D")
               + _usage_checks(cifar_runs, "codebook_size", sizes, "K = {:,}"),
               phrases("SimVQ uses nearly its whole codebook in every setting, as its authors report.",
                       "SimVQ did not use nearly its whole codebook in every setting.",
                       "Whether SimVQ uses nearly its whole codebook cannot be decided at this budget.")),
        Family("svq-eases-tokens", "companion question (SimVQ against §3.1)",
               "SimVQ eases tokens collapse: it spreads the tokens better than EMA-VQ from scratch",
               paired_checks(runs, "alloc_entropy", better=simvq_, worse=ema_scratch,
                             claim="{setting}: SimVQ gives a higher allocation entropy than EMA-VQ from scratch",
                             **syn)
               + paired_checks(cifar_runs, "perplexity", better={"quantizer": "simvq"}, worse=ema_scratch,
                               claim="{setting}: SimVQ gives a higher perplexity than EMA-VQ from scratch", **cif),
               phrases("SimVQ eases tokens collapse: it uses and spreads its tokens better than EMA-VQ from "
                       "scratch in every setting.",
                       "SimVQ did not ease tokens collapse in every setting: somewhere EMA-VQ from scratch "
                       "did at least as well.",
                       "Whether SimVQ eases tokens collapse cannot be decided at this budget.")),
        Family("svq-plus-pretraining", "companion question (SimVQ with §3.1's remedy)",
               "pretraining the autoencoder before SimVQ spreads the tokens further",
               paired_checks(runs, "alloc_entropy", better={"quantizer": "simvq", "method": "pretrained"},
                             worse=simvq_, claim="{setting}: SimVQ after pretraining gives a higher allocation "
                             "entropy than SimVQ from scratch", **{**syn, "id_prefix": "svq-pre"}),
               phrases("Pretraining before SimVQ spreads the tokens further: the two remedies add up.",
                       "Pretraining before SimVQ did not spread the tokens further in every dimension.",
                       "Whether pretraining adds anything to SimVQ cannot be decided at this budget.")),
        Family("svq-embeddings-persist", "companion question (SimVQ against §3.2)",
               f"embeddings collapse persists under SimVQ: a narrow encoder (hidden {narrow}) still collapses "
               f"its embeddings against a wide one (hidden {wide})",
               paired_checks(runs, "participation_ratio", better={"quantizer": "simvq", "method": "scratch",
                                                                   "encoder_hidden": wide},
                             worse={"quantizer": "simvq", "method": "scratch", "encoder_hidden": narrow},
                             claim=f"{{setting}}, SimVQ: hidden {wide} gives a higher participation ratio than "
                             f"hidden {narrow}", **{**syn, "id_prefix": "svq-emb"}),
               phrases("Embeddings collapse persists under SimVQ: it moves the tokens, not the encoder outputs.",
                       "Under SimVQ the narrow encoder did not collapse its embeddings in every dimension.",
                       "Whether embeddings collapse persists under SimVQ cannot be decided at this budget.")),
    ]
    if len(sizes) >= 2:
        lo = select(cifar_runs, codebook_size=sizes[0], quantizer="simvq")
        hi = select(cifar_runs, codebook_size=sizes[-1], quantizer="simvq")
        span = f"K = {sizes[0]:,} to {sizes[-1]:,}"
        families.insert(1, Family(
            "svq-own-rising", "SimVQ (Zhu, Li et al. 2024), abstract",
            "SimVQ's codebook use grows with the codebook size",
            [paired(f"svq-codes-k{sizes[0]}-k{sizes[-1]}", f"{span}: SimVQ uses more codes at the larger codebook",
                    [float(r.metrics["codes_used"]) for r in hi], [float(r.metrics["codes_used"]) for r in lo],
                    converged=runs_converged(lo + hi), setting=span)],
            phrases("SimVQ's codebook use grows with the codebook size.",
                    "SimVQ's codebook use did not grow with the codebook size.",
                    "Whether SimVQ's codebook use grows with the codebook size cannot be decided at this "
                    "budget.")))
    return families


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
            checks.append(paired(
                claim_id(f"rem-{collapse}-{key(name)}-{setting}"),
                f"{setting}: {label} {spec['what']}",
                [float(r.metrics[spec["metric"]]) for r in b], [float(r.metrics[spec["metric"]]) for r in w],
                converged=convergence(b, w, metric=spec["metric"]), setting=setting,
                metric=spec["metric"], labels=[k[1] for k in pairs],
                codebook_size=mine[pairs[0]].config.get("codebook_size"),
                checkpoint=at_checkpoint(b, w, spec["metric"])))
        if not checks:
            raise ConfigError(f"recipe {name!r} has no run that pairs with the baseline's for {collapse!r} "
                              f"(same {spec['over']} and seed)")
        what = f"{spec['name']} ({spec['data']})"
        families.append(Family(
            f"rem-{collapse}-{key(name)}", f"beyond the paper: {spec['name']}, {spec['data']}",
            f"{label}: {spec['what']}", checks,
            {HELD: f"{label} eases {what}: it {spec['what']} in every setting.",
             NOT_HELD: f"{label} does not ease {what} in every setting: it was no better than EMA-VQ from "
                       f"scratch in at least one.",
             INCONCLUSIVE: f"Whether {label} eases {what} cannot be decided at this budget."}))
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


def library_run_sentence(families_by_collapse: dict) -> str:
    """The ``lib`` recipe's verdicts (the library's EMA-VQ with our settings against ours), as a sentence."""
    found = [(COLLAPSES[c], f) for c, fs in families_by_collapse.items() for f in fs if f.id == f"rem-{c}-lib"]
    if not found:
        return "This execution did not run the `lib` recipe, so whole runs of the two EMA-VQs were not compared."
    return ("On whole training runs, the library's EMA-VQ with our settings against ours: "
            + "; ".join(f"{spec['name']} ({spec['data']}), {f.verdict}" for spec, f in found) + ".")


# ------------------------------------------------------------------ summaries of verdicts
def ablation_sentence(base: Sequence[Family], variant: Sequence[Family], what: str) -> str:
    """One sentence: do the families of an ablation come out as the base ones did?"""
    changed = [f"{b.id} ({b.outcome} → {v.outcome})" for b, v in zip(base, variant) if b.outcome != v.outcome]
    if not changed:
        return (f"With {what} every family comes out as with eq. (5) ({', '.join(b.outcome for b in base)}): "
                "here the verdicts do not depend on the update.")
    return (f"With {what} {len(changed)} of {len(base)} families come out differently: {'; '.join(changed)}. "
            "The update, not only the initialisation, moves these verdicts.")
