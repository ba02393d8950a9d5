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
# # SimVQ against pretraining
#
# Zhao et al. {cite}`zhao2024collapse` cure tokens collapse by **pretraining the autoencoder
# before VQ**, so that the K-means initialisation of the tokens sees embeddings that already
# separate the data. SimVQ (Zhu, Li et al. {cite}`zhu2024simvq`) attacks the codebook instead:
# its tokens are a learned linear map of a frozen random basis, so every gradient step moves
# *all* tokens, used or not, and none is left behind where the encoder outputs no longer are.
#
# This notebook trains these recipes on the same data and budget:
#
# - **SimVQ**: VQ-VAE with the SimVQ quantizer, trained from scratch;
# - **SimVQ pretrained** (synthetic data only): autoencoder pretraining, then SimVQ
#   fine-tuning, to see whether the two remedies add up;
# - **EMA scratch**: the paper's EMA-VQ from scratch, tokens initialised by K-means on the
#   outputs of the untrained encoder;
# - **EMA pretrained**: autoencoder pretraining, then K-means and EMA-VQ fine-tuning (the
#   epochs of each stage are in the sentence on the budget below).
#
# It asks two questions: does SimVQ cure **tokens collapse** (on the synthetic data of
# {doc}`02_tokens_collapse_synthetic` and on the CIFAR-10 codebook sweep of
# {doc}`03_tokens_collapse_cifar10`), and does it cure **embeddings collapse** (the too-narrow
# encoder of {doc}`04_embeddings_collapse`)?
#
# **SimVQ as implemented here** (`SimVQQuantizer` in `vqpaper/quantizers.py`). The codebook is
# $C = W(B)$: $B$ is a $K \times D$ matrix drawn once from $\mathcal{N}(0, D^{-1/2})$ (standard
# deviation $D^{-1/2}$) and frozen, $W$ a learnable linear layer $D \to D$ with bias. Each
# latent $z$ takes its nearest token $q$ in $C$; the decoder gets $q$ through the
# straight-through estimator. The loss is $\lVert \mathrm{sg}(z) - q \rVert^2 + \beta \lVert z -
# \mathrm{sg}(q) \rVert^2$ (mean squared errors, $\beta = 0.25$): the first term trains $W$, the
# second commits the encoder to its tokens. There is no EMA update and no K-means
# initialisation, and decoding from indices uses the projected codebook $W(B)$, not $B$. $W$
# starts like PyTorch's default linear layer, from the run's seed. The models, optimisers and
# budgets are those of notebooks 02 and 03 (the data actually used is stated below). SimVQ
# always trains for the whole budget, as EMA scratch does. {glue:text}`svq.setup`

# %% tags=["parameters", "remove-cell"]
profile = "ci"               # "ci" for minutes on a laptop CPU or "paper" for the paper settings
seeds = None                 # list of model seeds for the synthetic runs, None means the seeds of the profile
dims = None                  # list of data dimensions
token_dims = None            # token dimension for each data dimension
scratch_epochs = None        # synthetic VQ-VAE trained from scratch, EMA or SimVQ
pretrain_epochs = None       # synthetic autoencoder pretraining ...
finetune_epochs = None       # ... then EMA-VQ fine-tuning
encoder_hiddens = None       # list of encoder widths for the embeddings collapse test
n_per_cluster = None         # synthetic points per cluster, 10 clusters
data_seed = None             # seed of the synthetic data, separate from the model seeds
codebook_sizes = None        # list of CIFAR-10 codebook sizes K to sweep
token_dim = None             # CIFAR-10 dimension of a token and of a latent vector
channels = None              # width of the convolutional encoder and decoder
residual_channels = None     # hidden channels of the residual blocks
cifar_scratch_epochs = None  # CIFAR-10 VQ-VAE trained from scratch, EMA or SimVQ
cifar_pretrain_epochs = None # CIFAR-10 autoencoder pretraining ...
cifar_finetune_epochs = None # ... then EMA-VQ fine-tuning
cifar_seeds = None           # list of model seeds for the CIFAR-10 runs
cifar_lr = None              # CIFAR-10 learning rate of Adam (amsgrad); the paper's is 3e-4
train_images = None          # use only this many training images, a number above the data size means all
kmeans_vectors = None        # K-means initialisation on a random sample of this many latents, None means all
cifar10 = None               # path to an npz file or a torchvision folder, None means env VQPAPER_CIFAR10 or a download
device = None                # "auto", "cpu" or "cuda"

# %%
from vqpaper import book, claims, experiments as ex, plots, results, verdicts

cfg = ex.setup("05_simvq_comparison", profile, globals())
book.glue_text("svq.setup", ex.budget_sentence(cfg))
ex.parameters_table(cfg)

# %% [markdown]
# ## Synthetic data: train the recipes
#
# The EMA runs have the configurations of {doc}`02_tokens_collapse_synthetic`, so they come
# from the run cache (`vqpaper.sweeps`) when that notebook ran first. The SimVQ runs use every
# encoder width of `encoder_hiddens`; the widest one (32, as in notebook 02) is the SimVQ
# recipe of the comparison, the narrow one serves the embeddings-collapse test further down.

# %%
run_list = ex.run_list(cfg)
simvq_runs = ex.run_sweep(run_list, "SimVQ synthetic runs")
simvq_pre_runs = ex.run_sweep(run_list, "SimVQ + pretraining synthetic runs")
ema_runs = ex.run_sweep(run_list, "EMA synthetic runs")
wide = max(cfg.encoder_hiddens)
runs = ex.select(simvq_runs, encoder_hidden=wide) + simvq_pre_runs + ema_runs
RECIPES = {"simvq": dict(quantizer="simvq", method="scratch", encoder_hidden=wide),
           "simvq-pretrained": dict(quantizer="simvq", method="pretrained"),
           "ema-scratch": dict(quantizer="ema", method="scratch"),
           "ema-pretrained": dict(quantizer="ema", method="pretrained")}
table = ex.recipe_rows(runs, keys=("dim", "token_dim", "encoder_hidden", "seed"))
METRICS = ["usage", "perplexity", "alloc_entropy", "min_tokens_per_cluster", "coverage", "mse"]
ex.summary_frame(table, ["dim", "recipe"], METRICS)

# %% [markdown]
# ## Tokens collapse on the synthetic data
#
# `usage` is the fraction of the 128 tokens used at least once, `perplexity` the exponential of
# the entropy of token use; `alloc_entropy` is 1 when the tokens are spread evenly over the 10
# clusters of the data and 0 when they all serve one, `min_tokens_per_cluster` counts the
# tokens of the worst-served cluster, `coverage` is the fraction of data points near a
# reconstruction (Naeem et al. {cite}`naeem2020reliable`), `mse` the reconstruction error.

# %%
fig = plots.plot_metric_bars(table, METRICS, group="dim", hue="recipe", ncols=2)
book.figure(fig, "fig-simvq-synthetic")
agg = ex.summary(table, ["dim", "recipe"], METRICS)
ex.record(cfg, "fig-simvq-synthetic", {"summary": agg})
NAMES = {"simvq": "SimVQ", "simvq-pretrained": "SimVQ pretrained", "ema-scratch": "EMA scratch",
         "ema-pretrained": "EMA pretrained"}
book.glue_table("svq.summary", ex.summary_frame(table, ["dim", "recipe"], METRICS))

# %% [markdown]
# ```{glue:figure} fig-simvq-synthetic
# :name: fig-simvq-synthetic
#
# Tokens-collapse metrics of SimVQ, EMA-VQ from scratch and EMA-VQ with pretraining on the
# synthetic data, mean ± standard deviation over seeds (dots: single seeds).
# ```
#
# Mean ± standard deviation over seeds, per data dimension and recipe:
#
# ```{glue} svq.summary
# ```

# %% [markdown]
# ## Where the tokens sit
#
# Embeddings (histogram of encoder outputs) and tokens (rug: red used, blue unused) for the
# recipes, first seed. For 8-D data the tokens have 4 coordinates; every coordinate is
# one point of the histogram.

# %%
first = cfg.seeds[0]
panels = [ex.histogram_panel(ex.select(runs, dim=d, seed=first, **where)[0], f"{d}-D, {NAMES[key]}")
          for d in cfg.dims for key, where in RECIPES.items()]
fig = plots.plot_histograms(panels, ncols=len(RECIPES), suptitle="Embeddings (histogram) and tokens (rug)")
book.figure(fig, "fig-simvq-synthetic-histograms")
ex.record(cfg, "fig-simvq-synthetic-histograms",
               {f"{d}d/{key}": {m: r.metrics[m] for m in ("usage", "perplexity", "alloc_entropy")}
                for d in cfg.dims for key, where in RECIPES.items()
                for r in ex.select(runs, dim=d, seed=first, **where)}, seeds=[first])

# %% [markdown]
# ```{glue:figure} fig-simvq-synthetic-histograms
# :name: fig-simvq-synthetic-histograms
#
# Embeddings and tokens after training with SimVQ, SimVQ after pretraining, EMA-VQ from
# scratch and EMA-VQ with pretraining (left to right), one row per data dimension, first seed.
# ```

# %% [markdown]
# ## Embeddings collapse under SimVQ
#
# Notebook 04 checks whether a too-narrow encoder (hidden width 4 against 32) squeezes the
# embeddings into fewer effective dimensions (the paper's §3.2). SimVQ's remedy acts on the tokens, not on the
# encoder: does it help there? We compare SimVQ with the narrow and the wide encoder on the
# participation ratio of the embeddings (their effective dimension as a fraction of the
# latent dimension), the coverage of the data by the reconstructions and the minimum spread
# ratio (the worst cluster's reconstruction variance over its data variance).

# %%
EMB_METRICS = ["participation_ratio", "coverage", "min_spread_ratio", "mse"]
emb_table = ex.label_rows(ex.rows(simvq_runs, keys=("dim", "encoder_hidden", "seed")), "encoder",
                          "hidden {encoder_hidden}")
fig = plots.plot_metric_bars(emb_table, EMB_METRICS, group="dim", hue="encoder", ncols=2,
                             suptitle="SimVQ, narrow against wide encoder")
book.figure(fig, "fig-simvq-embeddings")
emb_agg = ex.summary(emb_table, ["dim", "encoder_hidden"], EMB_METRICS)
ex.record(cfg, "fig-simvq-embeddings", {"summary": emb_agg})
narrow = min(cfg.encoder_hiddens)
book.glue_text("svq.emb.narrow", str(narrow))
book.glue_text("svq.emb.wide", str(wide))
book.glue_table("svq.emb.summary", ex.summary_frame(emb_table, ["dim", "encoder_hidden"], EMB_METRICS))

# %% [markdown]
# ```{glue:figure} fig-simvq-embeddings
# :name: fig-simvq-embeddings
#
# SimVQ with an encoder of hidden width {glue:text}`svq.emb.narrow` against
# {glue:text}`svq.emb.wide`: participation ratio of the embeddings, coverage, minimum spread
# ratio and MSE, mean ± standard deviation over seeds (dots: single seeds).
# ```
#
# ```{glue} svq.emb.summary
# ```
#
# The verdict on this comparison, and whether its runs had converged, are in the last section.

# %% [markdown]
# ## CIFAR-10: the codebook sweep
#
# The conv VQ-VAE of {doc}`03_tokens_collapse_cifar10`, with the EMA recipes and SimVQ at each
# codebook size. The loader looks in the `cifar10` parameter, then in the environment
# variable `VQPAPER_CIFAR10`, then downloads with torchvision; it never switches silently to
# other data.

# %%
data = ex.load_cifar(cfg)
cifar_runs = ex.run_sweep(run_list, "CIFAR-10 runs", data)
n_train, n_test = int(cifar_runs[0].metrics["n_train"]), int(cifar_runs[0].metrics["n_test"])
used = book.glue_text("svq.cifar.data", ex.cifar_data_description(data, cifar_runs))
book.glue_text("svq.cifar.n_train", f"{n_train:,}")
book.glue_text("svq.cifar.n_test", f"{n_test:,}")
cifar_table = ex.recipe_rows(cifar_runs, keys=("codebook_size", "seed"))
CIFAR_METRICS = ["codes_used", "usage", "perplexity", "test_mse"]
ex.summary_frame(cifar_table, ["codebook_size", "recipe"], CIFAR_METRICS)

# %% [markdown]
# Data: {glue:text}`svq.cifar.data`. Codes used, usage and perplexity are computed over the
# latents of the {glue:text}`svq.cifar.n_train` **training** images (at large codebooks the
# test split has fewer latents than tokens); the MSE over the {glue:text}`svq.cifar.n_test`
# test images.

# %%
fig = plots.plot_sweep(cifar_table, x="codebook_size", ys=["codes_used", "perplexity", "test_mse"], hue="recipe",
                       xscale="log2", ylog=["codes_used", "perplexity"],
                       titles=["codes used (training images)", "perplexity (training images)", "test MSE"])
book.figure(fig, "fig-simvq-cifar10")
cifar_agg = ex.summary(cifar_table, ["codebook_size", "recipe"], CIFAR_METRICS)
ex.record(cfg, "fig-simvq-cifar10", {"data": used, "n_train": n_train, "n_test": n_test, "summary": cifar_agg}, seeds=cfg.cifar_seeds)
k_max = max(cfg.codebook_sizes)
book.glue_means("svq.cifar.largest",  # SimVQ with pretraining runs on the synthetic data only
                {key: cifar_agg[f"{k_max}/{name}"] for key, name in NAMES.items() if f"{k_max}/{name}" in cifar_agg},
                {"codes_used": ",.0f", "usage": ".1%", "perplexity": ",.1f", "test_mse": ".4f"})
book.glue_text("svq.cifar.k_max", f"{max(cfg.codebook_sizes):,}")

# %% [markdown]
# ```{glue:figure} fig-simvq-cifar10
# :name: fig-simvq-cifar10
#
# CIFAR-10: codes used (left, log scale), perplexity (middle, log scale) and test MSE (right)
# against the codebook size for SimVQ, EMA-VQ from scratch and EMA-VQ with pretraining.
# Codes used and perplexity over the {glue:text}`svq.cifar.n_train` training images, the MSE
# over the {glue:text}`svq.cifar.n_test` test images.
# ```
#
# At the largest codebook of the sweep ({glue:text}`svq.cifar.k_max` tokens) SimVQ uses
# {glue:text}`svq.cifar.largest.simvq.codes_used` codes, EMA-VQ from scratch
# {glue:text}`svq.cifar.largest.ema-scratch.codes_used` and EMA-VQ with pretraining
# {glue:text}`svq.cifar.largest.ema-pretrained.codes_used`; the perplexities are
# {glue:text}`svq.cifar.largest.simvq.perplexity`,
# {glue:text}`svq.cifar.largest.ema-scratch.perplexity` and
# {glue:text}`svq.cifar.largest.ema-pretrained.perplexity`, the test MSEs
# {glue:text}`svq.cifar.largest.simvq.test_mse`, {glue:text}`svq.cifar.largest.ema-scratch.test_mse`
# and {glue:text}`svq.cifar.largest.ema-pretrained.test_mse`.

# %% [markdown]
# ## What SimVQ claims, and what this book asks of it
#
# Each question is its own family of checks (never counted together, since "held" means
# something different in each, and never counted among Zhao et al.'s claims): **SimVQ's own
# claims**, that it uses nearly its whole codebook (made concrete as at least
# {glue:text}`svq.full_usage` of the tokens used) and that its codebook use scales with the
# codebook size (its codes used grow from the smallest to the largest CIFAR-10 codebook by a
# larger factor than EMA-VQ from scratch's own, so that a collapsing EMA-VQ, which also uses a
# few more codes at a larger codebook, cannot pass it); and the companion's questions: does
# SimVQ **ease tokens collapse** against EMA-VQ from scratch (the perplexity of token use,
# synthetic and CIFAR-10), does **pretraining add** anything to SimVQ (perplexity), and does
# **embeddings collapse persist** under SimVQ (participation ratio, narrow against wide). A
# check is inconclusive when its interval straddles zero and reaches beyond the smallest effect
# of interest, with one seed, or when a run had not converged (`vqpaper.claims`). The CIFAR-10
# SimVQ runs of this execution took {glue:text}`svq.cifar.steps`.
#
# **What `token_dim = 1` does to SimVQ.** On the 2-D and 3-D data each latent is a single
# number, so $W$ is a $1 \times 1$ linear layer plus bias: the whole codebook is an affine
# image $w\,b_k + c$ of {glue:text}`svq.codebook_size` fixed Gaussian numbers, and SimVQ can
# only stretch and shift it, never rearrange the tokens. In 8-D (token dimension 4) $W$ is a
# $4 \times 4$ matrix, a setting where its linear layer can rotate and shear the basis.

# %%
book.glue_text("svq.full_usage", f"{verdicts.SIMVQ_FULL_USAGE:.0%}")
book.glue_text("svq.codebook_size", f"{int(runs[0].config['codebook_size'])}")
book.glue_text("svq.cifar.steps", ex.optimizer_steps_text(ex.select(cifar_runs, quantizer="simvq")))
families = verdicts.simvq(runs + ex.select(simvq_runs, encoder_hidden=min(cfg.encoder_hiddens)), cifar_runs,
                          cfg.dims, cfg.codebook_sizes, narrow=min(cfg.encoder_hiddens), wide=wide)
claims.publish(cfg, families, "fig-simvq-claims", "svq")
claims.overview(families)

# %% [markdown]
# Over the families: {glue:text}`svq.claims.summary`. {glue:text}`svq.claims.left_out`
#
# - *SimVQ's own claims.* {glue:text}`claim.svq-own-usage.phrase`
#   {glue:text}`claim.svq-own-rising.phrase`
# - *Tokens collapse.* {glue:text}`claim.svq-eases-tokens.phrase` At the largest codebook of
#   the CIFAR-10 sweep ({glue:text}`svq.cifar.k_max` tokens) SimVQ uses
#   {glue:text}`svq.cifar.largest.simvq.codes_used` codes, EMA-VQ from scratch
#   {glue:text}`svq.cifar.largest.ema-scratch.codes_used` and EMA-VQ with pretraining
#   {glue:text}`svq.cifar.largest.ema-pretrained.codes_used`.
# - *SimVQ with pretraining.* {glue:text}`claim.svq-plus-pretraining.phrase`
# - *Embeddings collapse.* {glue:text}`claim.svq-embeddings-persist.phrase`
#
# SimVQ's codebook starts as a random basis at the scale $D^{-1/2}$ and $W$ has to learn to
# bring it to the encoder outputs, while the EMA recipes start from K-means on those outputs.
# Re-run with `profile="paper"` to see the comparison at the paper's budgets.
#
# **Convergence.** Every training stage behind a check, by the rule of `vqpaper.claims` (the
# loss's change over the stage's last quarter as a share of its whole fall, against the
# threshold; where a run recorded a checkpoint, the compared metric's drift since then):

# %%
claims.convergence_table(families)

# %% [markdown]
# ## Provenance

# %%
results.provenance_table(cfg.notebook)
