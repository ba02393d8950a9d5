# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tokens collapse on synthetic data
#
# Zhao et al. {cite}`zhao2024collapse` (§3.1.1, Fig. 3) argue that the usual recipe, K-means
# initialisation of the codebook from the outputs of an *untrained* encoder, crowds the tokens
# into the narrow range those outputs occupy. Training never spreads them out again: a few
# clusters of the data end up with most of the tokens, the rest with very few, and the
# reconstructions of the starved clusters shrink. Their remedy is to **pretrain the
# autoencoder without VQ, then fine-tune with VQ**, so the K-means initialisation sees
# embeddings that already separate the clusters.
#
# This notebook trains both recipes on 10-cluster data in a few dimensions over several seeds,
# and measures the collapse with the metrics of `vqpaper.metrics`.
# {glue:text}`tcs.setup`
#
# **Set-up.** Data: `make_blobs` with 10 clusters of equal size, standardised. Model: encoder
# MLP $d \to 32 \to 32 \to d$, its output split into $d/\mathrm{token\_dim}$ latent vectors that
# share one codebook of 128 tokens; decoder $d \to 32 \to 32 \to d$; AdamW, learning rate
# $10^{-3}$, batch 256, $\beta = 0.25$, EMA decay 0.9, K-means initialisation on the encoder
# outputs of the whole training set. This is our reading of the paper's §5.2, which names the
# layer count and widths but not every detail.

# %% tags=["parameters", "remove-cell"]
profile = "ci"          # "ci" (minutes on a laptop CPU) or "paper" (the paper's epochs)
seeds = None            # list of model seeds, None means the seeds of the profile
dims = None             # list of data dimensions
token_dims = None       # token dimension for each data dimension
scratch_epochs = None   # VQ-VAE trained from scratch
pretrain_epochs = None  # autoencoder pretraining ...
finetune_epochs = None  # ... then VQ fine-tuning
n_per_cluster = None    # points per cluster (10 clusters)
data_seed = None        # seed of the synthetic data, separate from the model seeds
laplace_ablation = None # also train every run with the Laplace-smoothed EMA update (True / False)
device = None           # "auto", "cpu" or "cuda"

# %%
from vqpaper import book, claims, experiments as ex, plots, results, verdicts

cfg = ex.setup("02_tokens_collapse_synthetic", profile, globals())
book.glue_text("tcs.setup", ex.budget_sentence(cfg))
ex.parameters_table(cfg)

# %% [markdown]
# ## Train both recipes
#
# Each run is stored under a key of its full configuration (`vqpaper.sweeps`): re-executing
# the notebook with the same parameters reuses finished runs, and a killed sweep resumes. Runs
# of one shape train together as one batched model (`vqpaper.train`), the Laplace ablation's
# runs below included; a run's numbers do not depend on what it trained with. Every epoch takes
# full batches of 256 points from a new random order and leaves out the last `n mod 256`.

# %%
run_list = ex.run_list(cfg)
trained = ex.run_sweeps(run_list, list(run_list))  # the ablation's runs too: one batched sweep
runs = trained["synthetic runs"]
table = ex.rows(runs, keys=("dim", "token_dim", "method", "seed"))
METRICS = ["perplexity", "usage", "alloc_entropy", "min_tokens_per_cluster", "min_spread_ratio", "coverage",
           "precision", "mse", "sliced_wasserstein", "quantization_error"]
ex.summary_frame(table, ["dim", "method"], METRICS)

# %% [markdown]
# ## Embeddings and tokens, data and reconstructions
#
# What the paper shows in its Fig. 3. For each dimension, the left panel of a pair is the VQ-VAE trained from scratch and the right
# one the pretrained-then-fine-tuned model (first seed). The histograms show the encoder
# outputs (embeddings) against the positions of the tokens; the scatter plots show data and
# reconstructions (for 3-D and 8-D, on the data's first two principal components).

# %%
first = cfg.seeds[0]
panels = [ex.histogram_panel(r, f"{d}-D, {m}")
          for d in cfg.dims for m in ("scratch", "pretrained")
          for r in ex.select(runs, dim=d, method=m, seed=first)]
fig = plots.plot_histograms(panels, ncols=2, suptitle="Embeddings (histogram) and tokens (rug)")
book.figure(fig, "fig-tokens-collapse-synthetic-histograms")
recon = [ex.reconstruction_panel(r, f"{d}-D, {m}")
         for d in cfg.dims for m in ("scratch", "pretrained")
         for r in ex.select(runs, dim=d, method=m, seed=first)]
fig = plots.plot_reconstructions(recon, ncols=2, suptitle="Data (grey) and reconstructions")
book.figure(fig, "fig-tokens-collapse-synthetic-reconstructions")

# %% [markdown]
# ```{glue:figure} fig-tokens-collapse-synthetic-histograms
# :name: fig-tokens-collapse-synthetic-histograms
#
# Embeddings (encoder outputs) and tokens after training, from scratch (left) and with
# pretraining (right), for 2-, 3- and 8-dimensional data (the paper's Fig. 3 a–f).
# ```
#
# ```{glue:figure} fig-tokens-collapse-synthetic-reconstructions
# :name: fig-tokens-collapse-synthetic-reconstructions
#
# Data and reconstructions for the same runs as {numref}`fig-tokens-collapse-synthetic-histograms`
# (the reconstructions of the paper's Fig. 3 a–f).
# ```

# %% [markdown]
# ## The collapse in numbers
#
# Mean ± sample standard deviation over seeds (the book's one aggregation,
# `experiments.aggregate`). `alloc_entropy` is 1 when the tokens are spread evenly over the 10
# clusters and 0 when they all serve one; `min_tokens_per_cluster` counts the tokens of the
# worst-served cluster; `min_spread_ratio` is the variance of the worst-reproduced cluster's
# reconstructions over its data's variance (0 when a cluster is reconstructed as one point);
# `coverage` is the fraction of data points near a reconstruction (Naeem et al.
# {cite}`naeem2020reliable`); `perplexity` is out of 128 tokens.

# %%
fig = plots.plot_metric_bars(table, ["perplexity", "alloc_entropy", "min_tokens_per_cluster", "coverage"],
                             group="dim", hue="method")
book.figure(fig, "fig-tokens-collapse-synthetic-metrics")
agg = ex.summary(table, ["dim", "method"], METRICS)
ex.record(cfg, "fig-tokens-collapse-synthetic-metrics", {"summary": agg})
ex.record(cfg, "fig-tokens-collapse-synthetic-histograms",
          {f"{r.config['dim']}d/{r.config['method']}": {"distinct_code_tuples": int(r.metrics["distinct_code_tuples"]),
                                                        "perplexity": r.metrics["perplexity"]}
           for r in ex.select(runs, seed=first)}, seeds=[first])
ex.record(cfg, "fig-tokens-collapse-synthetic-reconstructions",
          {f"{r.config['dim']}d/{r.config['method']}": {"coverage": r.metrics["coverage"], "mse": r.metrics["mse"]}
           for r in ex.select(runs, seed=first)}, seeds=[first])
summary_table = book.glue_table("tcs.summary", ex.summary_frame(
    table, ["dim", "method"], ["perplexity", "alloc_entropy", "min_tokens_per_cluster", "min_spread_ratio", "coverage"]))
summary_table

# %% [markdown]
# ```{glue:figure} fig-tokens-collapse-synthetic-metrics
# :name: fig-tokens-collapse-synthetic-metrics
#
# Collapse metrics, mean ± standard deviation over seeds (dots: single seeds).
# ```

# %% [markdown]
# ## Do the paper's claims hold here?
#
# Each sentence of the paper is one family of checks, one check per data dimension: the paired
# difference pretrained − scratch over seeds, with its 95% t interval, against the metric's
# smallest effect of interest δ (`vqpaper.claims`). A check *holds* when the interval lies above
# zero and reaches δ; it is *not held* when the interval lies below zero ("the other way") or
# inside (−δ, δ) ("no effect"); it is *inconclusive* when the interval straddles zero and
# reaches beyond δ, with fewer than two seeds, or when a run's training had not converged. A
# family holds when all its checks hold. Token use is judged on its perplexity; the allocation
# entropy over the clusters, which saturates near 1 in 8-D, is shown as a companion measure. The
# sentences below are chosen by the computed outcome, not written by hand.

# %%
families = verdicts.tokens_collapse_synthetic(runs, cfg.dims)
claims.publish(cfg, families, "fig-tokens-collapse-synthetic-claims", "tcs")
claims.overview(families)

# %% [markdown]
# {glue:text}`tcs.claims.paper_count`.
#
# - {glue:text}`claim.tcs-uniform.phrase` {glue:text}`claim.tcs-alloc-entropy.phrase`
# - {glue:text}`claim.tcs-worst-cluster.phrase`
# - {glue:text}`claim.tcs-narrower-recon.phrase`
# - {glue:text}`claim.tcs-coverage.phrase`
#
# **Convergence.** Every training stage behind a check (pretraining included), by the rule of
# `vqpaper.claims`: the loss's change over the stage's last quarter as a share of its whole fall,
# against the threshold; where a run recorded a checkpoint, the compared metric's drift since then.

# %%
claims.convergence_table(families)

# %% [markdown]
# ## Ablation: the initialisation's doing, or the smoothing's?
#
# The runs above learn the tokens by the paper's eq. (5), $t_k = M_k / L_k$, under which a
# token that no embedding chooses stays where it is ({doc}`01_preliminaries`). Most
# implementations (sonnet, vector-quantize-pytorch) Laplace-smooth $L$ first, which drags
# every unused token towards the origin. The paper argues that tokens collapse is the
# initialisation's doing; if so, the verdicts should not depend on the update. Here every
# run is trained again with the smoothed update (`ema_update="laplace"`), and the same
# families are checked (the companion's ablation, not counted among the paper's claims). The
# sentence below compares the two updates check by check, on decided evidence only.

# %%
if cfg.laplace_ablation:
    laplace_runs = trained["synthetic runs, Laplace update"]
    laplace_table = ex.rows(laplace_runs, keys=("dim", "token_dim", "method", "seed"))
    ABLATION_METRICS = ["perplexity", "alloc_entropy", "min_tokens_per_cluster", "min_spread_ratio", "coverage",
                        "dead_tokens_near_origin"]
    ex.record(cfg, "fig-tokens-collapse-synthetic-laplace",
              {"summary": ex.summary(laplace_table, ["dim", "method"], ABLATION_METRICS),
               "eq5_summary": ex.summary(table, ["dim", "method"], ABLATION_METRICS)})
    laplace_families = verdicts.tokens_collapse_synthetic(laplace_runs, cfg.dims, suffix="-laplace",
                                                          note=" (Laplace-smoothed update)")
    claims.publish(cfg, laplace_families, "fig-tokens-collapse-synthetic-laplace-claims", "tcs.laplace")
    book.glue_text("tcs.laplace.sentence", verdicts.ablation_sentence(families, laplace_families,
                                                                      "the Laplace-smoothed update"))
    display(ex.summary_frame(laplace_table, ["dim", "method"], ABLATION_METRICS))
    display(claims.overview(laplace_families))
else:
    book.glue_text("tcs.laplace.sentence", "This execution skipped the ablation (`laplace_ablation=False`).")

# %% [markdown]
# {glue:text}`tcs.laplace.sentence`

# %% [markdown]
# ## Provenance

# %%
results.provenance_table(cfg.notebook)
