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
# # Embeddings collapse
#
# The second collapse of Zhao et al. {cite}`zhao2024collapse` (§3.2, Figs. 5 and 6) is not
# about the tokens but about the encoder: with too little capacity it maps different parts of
# the data onto overlapping embeddings, and no codebook can separate afterwards what the
# encoder has merged. The paper shows it on the 10-cluster data, where an encoder with hidden
# size 4 produces embeddings whose histogram peaks merge and reconstructions that fall outside
# the data, while hidden size 32 does not; and on CIFAR-10, where shrinking the encoder's
# channels raises the test MSE.
#
# **Set-up.** The synthetic model of {doc}`02_tokens_collapse_synthetic` (encoder MLP
# $d \to H \to H \to d$, decoder $d \to 32 \to 32 \to d$, 128 tokens, EMA decay 0.9, K-means
# initialisation on the whole training set) with the encoder width $H$ (`encoder_hidden`)
# reduced from 32 to 8 and 4, the decoder unchanged, trained as a VQ-VAE from scratch, as in
# the paper, over several seeds. Beside it we train a variant in which both models are
# first pretrained as autoencoders (half the epochs) and then fine-tuned with VQ: it removes
# tokens collapse from the comparison, so what remains is the encoder's own limit. On
# CIFAR-10, the convolutional VQ-VAE of {doc}`03_tokens_collapse_cifar10` with the encoder's
# channels reduced step by step and the decoder fixed (the paper: codebook 512, token
# dimension 64, channels from 64 down to 2, 300 epochs; synthetic data 200 epochs, which the
# `paper` profile follows). {glue:text}`ec.setup`
#
# **Measures.** For embeddings: the participation ratio of the encoder outputs $Z$ (their
# effective dimension, divided by $d$: 1 when the variance is spread over all directions).
# For tokens: how many tokens the worst-served cluster gets, and the share of the tokens that
# lie *outside* the embeddings' distribution (`metrics.tokens_outside`: farther from every
# embedding than 99% of the embeddings are from their nearest neighbour). For reconstructions: MSE, sliced
# Wasserstein distance to the data, and the precision and coverage of Naeem et al.
# {cite}`naeem2020reliable` (coverage: the fraction of data points with a reconstruction
# nearby); and the *min spread ratio*, the variance of the worst-reproduced cluster's
# reconstructions divided by that cluster's data variance (0 when a whole cluster is
# reconstructed as one point).

# %% tags=["parameters", "remove-cell"]
profile = "ci"               # "ci" for minutes on a laptop CPU or "paper" for the paper settings
dims = None                  # list of data dimensions, None means the dimensions of the profile
token_dims = None            # token dimension for each data dimension
encoder_hiddens = None       # encoder widths of the VQ-VAEs trained from scratch as in the paper
pretrained_hiddens = None    # encoder widths of the variant where both models are pretrained
seeds = None                 # list of model seeds of the synthetic runs
epochs = None                # synthetic epochs, the pretrained variant splits them half and half
n_per_cluster = None         # points per cluster with 10 clusters
data_seed = None             # seed of the synthetic data, separate from the model seeds
encoder_channels = None      # list of CIFAR-10 encoder widths, the decoder keeps cifar_channels
cifar_channels = None        # width of the CIFAR-10 decoder
cifar_residual_channels = None  # hidden channels of the residual blocks
cifar_epochs = None          # CIFAR-10 epochs, VQ-VAE from scratch
cifar_codebook_size = None   # CIFAR-10 codebook size
cifar_token_dim = None       # CIFAR-10 token dimension
cifar_kmeans_vectors = None  # K-means initialisation on a random sample of this many latents, None means all
cifar_train_images = None   # use only this many CIFAR-10 training images, None means all of them
cifar_lr = None             # CIFAR-10 learning rate of Adam (amsgrad); the paper's is 3e-4
cifar_seeds = None           # list of model seeds of the CIFAR-10 runs
cifar10 = None               # path to an npz file or a torchvision folder, None means env VQPAPER_CIFAR10 or a download
device = None                # "auto", "cpu" or "cuda"

# %%
from vqpaper import book, claims, experiments as ex, plots, results, verdicts

cfg = ex.setup("04_embeddings_collapse", profile, globals())
book.glue_text("ec.setup", ex.budget_sentence(cfg))
ex.parameters_table(cfg)

# %% [markdown]
# ## Synthetic data: narrow against wide encoders
#
# Every run is stored under a key of its full configuration (`vqpaper.sweeps`), so
# re-executing the notebook reuses finished runs.

# %%
run_list = ex.run_list(cfg)
runs = ex.run_sweep(run_list, "synthetic, scratch")
pre_runs = ex.run_sweep(run_list, "synthetic, pretrained")
KEYS = ("dim", "token_dim", "method", "encoder_hidden", "seed")
table = ex.label_rows(ex.rows(runs, keys=KEYS), "model", "{method}, hidden {encoder_hidden}")
pre_table = ex.label_rows(ex.rows(pre_runs, keys=KEYS), "model", "{method}, hidden {encoder_hidden}")
METRICS = ["participation_ratio", "coverage", "precision", "mse", "sliced_wasserstein", "min_tokens_per_cluster",
           "min_spread_ratio", "perplexity", "tokens_outside", "embedding_peaks"]
ex.summary_frame(table + pre_table, ["dim", "model"], METRICS)

# %% [markdown]
# ## Embeddings, tokens and reconstructions
#
# What the paper shows in its Fig. 5. For each dimension, the narrowest encoder (left) against the widest (right), trained from
# scratch as in the paper (first seed). Histograms: encoder outputs (grey) against the
# tokens (red; unused tokens dashed blue). Scatter plots: data coloured by cluster and the
# reconstructions (for 3-D and 8-D, on the data's first two principal components).

# %%
first = cfg.seeds[0]
h_lo, h_hi = min(cfg.encoder_hiddens), max(cfg.encoder_hiddens)
shown = [(d, h, r) for d in cfg.dims for h in (h_lo, h_hi)
         for r in ex.select(runs, dim=d, encoder_hidden=h, seed=first)]
fig = plots.plot_histograms([ex.histogram_panel(r, f"{d}-D, hidden {h}") for d, h, r in shown], ncols=2,
                            suptitle="Embeddings (histogram) and tokens, VQ-VAE from scratch")
book.figure(fig, "fig-embeddings-collapse-synthetic")
fig = plots.plot_reconstructions([ex.reconstruction_panel(r, f"{d}-D, hidden {h}") for d, h, r in shown], ncols=2,
                                 suptitle="Data and reconstructions, VQ-VAE from scratch")
book.figure(fig, "fig-embeddings-collapse-synthetic-reconstructions")
ex.record(cfg, "fig-embeddings-collapse-synthetic",
               {f"{d}d/hidden{h}": {k: r.metrics.get(k) for k in ("embedding_peaks", "peaks_with_tokens",
                                                                 "participation_ratio", "perplexity")}
                for d, h, r in shown}, seeds=[first])
ex.record(cfg, "fig-embeddings-collapse-synthetic-reconstructions",
               {f"{d}d/hidden{h}": {k: r.metrics[k] for k in ("coverage", "mse", "min_spread_ratio")}
                for d, h, r in shown}, seeds=[first])
book.glue_text("ec.h_lo", h_lo)
book.glue_text("ec.h_hi", h_hi)

# %% [markdown]
# ```{glue:figure} fig-embeddings-collapse-synthetic
# :name: fig-embeddings-collapse-synthetic
#
# Embeddings and tokens of VQ-VAEs trained from scratch with encoder hidden size
# {glue:text}`ec.h_lo` (left) and {glue:text}`ec.h_hi` (right), first seed (the paper's Fig. 5, top).
# In 8-D (token dimension 4) every coordinate of every latent vector is one value of the
# histogram.
# ```
#
# ```{glue:figure} fig-embeddings-collapse-synthetic-reconstructions
# :name: fig-embeddings-collapse-synthetic-reconstructions
#
# Data and reconstructions of the runs of {numref}`fig-embeddings-collapse-synthetic` (the
# paper's Fig. 5, bottom).
# ```

# %% [markdown]
# ## The collapse in numbers, in the paper's setup and with pretraining
#
# Mean ± standard deviation over seeds, dots for single seeds. The top group of panels is
# the paper's setup (VQ-VAE from scratch, every encoder width); the bottom group is the
# variant in which both models were pretrained as autoencoders before VQ.

# %%
PANEL_METRICS = ["participation_ratio", "coverage", "min_tokens_per_cluster", "min_spread_ratio", "mse",
                 "sliced_wasserstein"]
fig = plots.plot_metric_bars(table, PANEL_METRICS, group="dim", hue="model",
                             suptitle="VQ-VAE from scratch (the paper's setup)")
book.figure(fig, "fig-embeddings-collapse-synthetic-metrics")
fig = plots.plot_metric_bars(pre_table, PANEL_METRICS, group="dim", hue="model",
                             suptitle="Both models pretrained as autoencoders, then VQ")
book.figure(fig, "fig-embeddings-collapse-synthetic-pretrained")
agg = ex.summary(table, ["dim", "encoder_hidden"], METRICS)
pre_agg = ex.summary(pre_table, ["dim", "encoder_hidden"], METRICS)
ex.record(cfg, "fig-embeddings-collapse-synthetic-metrics", {"summary": agg})
ex.record(cfg, "fig-embeddings-collapse-synthetic-pretrained", {"summary": pre_agg, "scratch_summary": agg})
TABLE_METRICS = ["precision", "tokens_outside", "participation_ratio", "coverage", "min_spread_ratio", "mse"]
book.glue_table("ec.summary", ex.summary_frame(table, ["dim", "encoder_hidden"], TABLE_METRICS))
book.glue_table("ec.pretrained.summary", ex.summary_frame(pre_table, ["dim", "encoder_hidden"], TABLE_METRICS))

# %% [markdown]
# ```{glue:figure} fig-embeddings-collapse-synthetic-metrics
# :name: fig-embeddings-collapse-synthetic-metrics
#
# Embeddings-collapse metrics of VQ-VAEs trained from scratch with each encoder width, by
# data dimension (mean ± std over seeds, dots: single seeds).
# ```
#
# ```{glue:figure} fig-embeddings-collapse-synthetic-pretrained
# :name: fig-embeddings-collapse-synthetic-pretrained
#
# The same metrics when both the narrow and the wide model are pretrained as autoencoders
# before VQ fine-tuning, which takes tokens collapse out of the comparison.
# ```
#
# The paper's set-up (VQ-VAE from scratch), mean ± standard deviation over seeds:
#
# ```{glue} ec.summary
# ```
#
# Both models pretrained as autoencoders, then VQ:
#
# ```{glue} ec.pretrained.summary
# ```

# %% [markdown]
# ## CIFAR-10 with narrower and narrower encoders
#
# The paper's Fig. 6 on our CIFAR-10 runs.

# %%
data = ex.load_cifar(cfg)
cifar_runs = ex.run_sweep(run_list, "CIFAR-10 runs", data)
data_used = book.glue_text("ec.data", ex.cifar_data_description(data, cifar_runs))
cifar_table = ex.rows(cifar_runs, keys=("encoder_channels", "seed"))
CIFAR_METRICS = ["test_mse", "test_mse_normalised", "perplexity", "usage", "participation_ratio"]
ex.summary_frame(cifar_table, ["encoder_channels"], CIFAR_METRICS)

# %%
fig = plots.plot_sweep(cifar_table, x="encoder_channels", ys=["test_mse", "perplexity", "participation_ratio"],
                       titles=["test MSE", "perplexity (training images)", "participation ratio of Z (test)"])
book.figure(fig, "fig-embeddings-collapse-cifar10")
cifar_agg = ex.summary(cifar_table, ["encoder_channels"], CIFAR_METRICS)
n_train, n_test = int(cifar_runs[0].metrics["n_train"]), int(cifar_runs[0].metrics["n_test"])
ex.record(cfg, "fig-embeddings-collapse-cifar10",
               {"data": data_used, "n_train": n_train, "n_test": n_test, "summary": cifar_agg}, seeds=cfg.cifar_seeds)
widths = sorted(cfg.encoder_channels, reverse=True)
book.glue_text("ec.cifar.widest", widths[0])
book.glue_text("ec.cifar.narrowest", widths[-1])
book.glue_text("ec.cifar.decoder_channels", cfg.cifar_channels)
book.glue_means("ec.cifar", {f"c{w}": cifar_agg[str(w)] for w in widths}, {"test_mse": ".4f", "test_mse_normalised": ".3f"})
book.glue_text("ec.cifar.widest.test_mse", f"{cifar_agg[str(widths[0])]['test_mse']['mean']:.4f}")
book.glue_text("ec.cifar.narrowest.test_mse", f"{cifar_agg[str(widths[-1])]['test_mse']['mean']:.4f}")
book.glue_text("ec.cifar.mse.sentence", ex.extremes_sentence(cifar_agg, widths, "test_mse", "encoder channels"))

# %% [markdown]
# ```{glue:figure} fig-embeddings-collapse-cifar10
# :name: fig-embeddings-collapse-cifar10
#
# CIFAR-10: test MSE (left), perplexity over the training images (middle) and participation
# ratio of the test embeddings (right) against the number of encoder channels; the decoder
# keeps {glue:text}`ec.cifar.decoder_channels` channels (the paper's Fig. 6). Data:
# {glue:text}`ec.data`.
# ```
#
# {glue:text}`ec.cifar.mse.sentence` Data: {glue:text}`ec.data`.

# %% [markdown]
# ## Do the paper's claims hold here?
#
# Each sentence of the paper's §3.2 is one family of checks, one check per data dimension:
# the paired difference between the widest ({glue:text}`ec.h_hi`) and the narrowest
# ({glue:text}`ec.h_lo`) encoder over seeds, with its 95% interval against the metric's smallest
# effect of interest (`vqpaper.claims`). The paper's sentences about Fig. 5 speak of
# reconstructions outside the data (precision), merged embedding peaks and tokens outside the
# embeddings; its MSE sentence speaks of CIFAR-10 (Fig. 6). The participation ratio and the
# synthetic MSE are the companion's measures, and the variant with both models pretrained is the
# companion's own: they are published with their label and never counted among the paper's
# claims. The middle width of the figures is shown, not checked: the paper makes no claim about it.

# %%
paper_families = (verdicts.embeddings_collapse(runs, cfg.dims, cfg.token_dims, narrow=h_lo, wide=h_hi)
                  + verdicts.embeddings_collapse_cifar(cifar_runs, widths))
claims.publish(cfg, paper_families, "fig-embeddings-collapse-claims", "ec")
claims.overview(paper_families)

# %%
variant_families = verdicts.embeddings_collapse_pretrained(pre_runs, cfg.dims, narrow=min(cfg.pretrained_hiddens),
                                                           wide=max(cfg.pretrained_hiddens))
claims.publish(cfg, variant_families, "fig-embeddings-collapse-variant-claims", "ec.variant")
claims.overview(variant_families)

# %% [markdown]
# **The paper's set-up:** {glue:text}`ec.claims.paper_count`. {glue:text}`ec.claims.left_out`
#
# - *Reconstructions outside the data.* {glue:text}`claim.ec-outside-data.phrase` (precision:
#   the fraction of reconstructions that fall within the k-nearest-neighbour balls of the data.)
# - *Merged peaks.* Counted on a kernel density estimate of the 1-D embeddings:
#   {glue:text}`claim.ec-merged-peaks.phrase`
# - *Tokens outside the embeddings.* {glue:text}`claim.ec-tokens-outside.phrase`
# - *CIFAR-10 (Fig. 6).* {glue:text}`claim.ec-cifar-mse.phrase`
# - *The companion's measures.* {glue:text}`claim.ec-participation.phrase`
#   {glue:text}`claim.ec-mse.phrase`
#
# Trained from scratch, every width also suffers from tokens collapse
# ({doc}`02_tokens_collapse_synthetic`), which can hide the encoder's part. **The companion's
# variant** takes it out of the comparison by pretraining both models:
# {glue:text}`ec.variant.claims.summary`. {glue:text}`claim.ec-variant-spread.phrase`
# {glue:text}`claim.ec-variant-mse.phrase`
#
# **Convergence.** Every training stage behind a check, by the rule of `vqpaper.claims` (the
# loss's change over the stage's last quarter as a share of its whole fall, against the
# threshold; where a run recorded a checkpoint, the compared metric's drift since then):

# %%
claims.convergence_table(paper_families + variant_families)

# %% [markdown]
# ## Provenance

# %%
results.provenance_table(cfg.notebook)
