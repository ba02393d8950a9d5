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
# # Beyond the paper: which remedy for which collapse?
#
# Zhao et al. {cite}`zhao2024collapse` test one remedy for **tokens collapse**, pretraining the
# autoencoder before VQ (§3.1), and none for **embeddings collapse** (§3.2); notebook
# {doc}`05_simvq_comparison` adds SimVQ {cite}`zhu2024simvq`. People who train VQ tokenizers reach
# for a longer list. This notebook measures them all on the two collapses, with the metrics and
# the verdicts of notebooks 02–05, and ends with a diagnosis you can run on your own model.
#
# | recipe | what it changes | implementation |
# |---|---|---|
# | `ema` | nothing: EMA-VQ from scratch, K-means on the untrained encoder's outputs (the **baseline**) | ours (`vqpaper.quantizers`) |
# | `pretrained` | pretrain the autoencoder, then VQ (the paper's remedy) | ours |
# | `simvq` | codebook $W(B)$, $B$ frozen (notebook 05) | ours |
# | `batch-kmeans` | K-means on the first training batch instead of the whole training set (SoundStream, common libraries) | ours |
# | `restart` | a token whose EMA count of assignments per batch falls below {glue:text}`rem.restart.threshold` is moved onto a random embedding of the batch (Jukebox {cite}`dhariwal2020jukebox`, SoundStream {cite}`zeghidour2021soundstream`) | vector-quantize-pytorch |
# | `rotation` | the rotation trick: gradients reach the encoder through a rotation onto the token (Fifty et al. {cite}`fifty2024rotation`) | vector-quantize-pytorch |
# | `l2` | embeddings projected to a few dimensions and l2-normalised, cosine nearest token (ViT-VQGAN {cite}`yu2021vitvqgan`) | vector-quantize-pytorch |
# | `fsq` | no learned codebook: a few projected coordinates rounded to a fixed grid of as many codes (Mentzer et al. {cite}`mentzer2023fsq`) | vector-quantize-pytorch |
# | `lib` | the library's EMA-VQ with our settings, to compare it with ours | vector-quantize-pytorch |
#
# Recipes combine with `+` (`pretrained+restart`, `restart+batch-kmeans`), through the
# `remedies` parameter. The library's quantizers sit behind the book's one interface,
# `quantized, indices, loss = quantizer(z)` (`vqpaper/remedies.py`), with every argument
# passed explicitly: version 1.32 would otherwise turn the rotation trick on by default. Apart
# from the recipe, every run is the baseline's: the models, data, optimiser and budgets of
# notebooks 02–04, at the epochs of the parameters below. How many codes FSQ has and how many
# dimensions the l2 codes have is stated with the numbers.

# %% tags=["parameters", "remove-cell"]
profile = "ci"               # "ci" for minutes on a laptop CPU or "paper" for the paper settings
remedies = None              # list of recipes, e.g. ["ema", "pretrained", "restart", "pretrained+restart"]; must hold "ema"
dims = None                  # list of data dimensions of the tokens-collapse runs
token_dims = None            # token dimension for each data dimension
seeds = None                 # list of model seeds of the synthetic runs
scratch_epochs = None        # synthetic epochs from scratch
pretrain_epochs = None       # synthetic autoencoder pretraining ...
finetune_epochs = None       # ... then VQ fine-tuning, for recipes with "pretrained"
n_per_cluster = None         # synthetic points per cluster, 10 clusters
data_seed = None             # seed of the synthetic data, separate from the model seeds
narrow_hidden = None         # encoder width of the embeddings-collapse runs (the wide one is 32)
narrow_dims = None           # list of data dimensions of the embeddings-collapse runs, among dims
narrow_epochs = None         # epochs of the embeddings-collapse runs (pretrained: half autoencoder, half VQ)
narrow_n_per_cluster = None  # points per cluster of the embeddings-collapse runs
cifar = None                 # also every recipe on CIFAR-10 (True / False; off at ci)
codebook_sizes = None        # list of CIFAR-10 codebook sizes K
token_dim = None             # CIFAR-10 dimension of a token and of a latent vector
channels = None              # width of the convolutional encoder and decoder
residual_channels = None     # hidden channels of the residual blocks
cifar_scratch_epochs = None  # CIFAR-10 epochs from scratch
cifar_pretrain_epochs = None # CIFAR-10 autoencoder pretraining ...
cifar_finetune_epochs = None # ... then VQ fine-tuning
cifar_seeds = None           # list of model seeds of the CIFAR-10 runs
cifar_lr = None              # CIFAR-10 learning rate of Adam (amsgrad); the paper's is 3e-4
train_images = None          # use only this many training images, None means all
kmeans_vectors = None        # K-means initialisation on a random sample of this many latents, None means all
cifar10 = None               # path to an npz file or a torchvision folder, None means env VQPAPER_CIFAR10 or a download
device = None                # "auto", "cpu" or "cuda"

# %%
import pandas as pd

from vqpaper import book, claims, experiments as ex, paths, plots, recipes, remedies as rem, results, verdicts

cfg = ex.setup("06_remedies", profile, globals())
book.glue_text("rem.restart.threshold", str(rem.DEAD_CODE_THRESHOLD))
ex.parameters_table(cfg)

# %% [markdown]
# ## Our EMA-VQ and the library's
#
# Before comparing remedies built on the library with a baseline built on our code, we check
# that the two EMA-VQs agree where they should. Both start from the same codebook and see the
# same stream of batches (`experiments.compare_ema_with_library`), once with each of our update
# rules.

# %%
library_rows = ex.compare_ema_with_library(token_dim=1) + ex.compare_ema_with_library(token_dim=4)
ex.record(cfg, "fig-remedies-library-ema", {f"{r['token_dim']}d/{r['update']}": r for r in library_rows}, seeds=[0])
book.glue_text("rem.library.sentence.1d", ex.library_difference_sentence(library_rows[:2]))
book.glue_text("rem.library.sentence.4d", ex.library_difference_sentence(library_rows[2:]))
book.glue_text("rem.library.conclusion", ex.library_conclusion(library_rows))
pd.DataFrame(library_rows)

# %% [markdown]
# {glue:text}`rem.library.sentence.4d` In one dimension: {glue:text}`rem.library.sentence.1d`
#
# {glue:text}`rem.library.conclusion` The library has no option for eq. (5) as the paper writes
# it: its update always smooths the counts. Their K-means
# initialisations differ too (ours starts from distinct data points and never leaves a token at
# the origin, see notebook 01; the library's samples its starting tokens with replacement), so
# the `lib` recipe below, the library's EMA-VQ with our settings, measures both differences at
# once on whole training runs.

# %% [markdown]
# ## Tokens collapse on the synthetic data
#
# Every recipe on the 10-cluster data of {doc}`02_tokens_collapse_synthetic` (encoder hidden 32,
# 128 tokens), one run per data dimension and seed. Recipes that share a configuration with
# another notebook's run share the run (`vqpaper.sweeps`).

# %%
run_list = ex.run_list(cfg)  # every recipe on EMA-VQ from scratch: synthetic, narrow encoder (and CIFAR-10)
trained = ex.run_sweeps(run_list, ["synthetic runs", "narrow-encoder runs"])  # one batched sweep
runs = ex.by_recipe(trained["synthetic runs"], cfg.remedies)
table = ex.remedy_rows(runs, keys=("dim", "seed"))
METRICS = ["usage", "perplexity", "alloc_entropy", "min_tokens_per_cluster", "coverage", "mse"]
book.glue_table("rem.tokens.summary", ex.summary_frame(table, ["dim", "remedy"], METRICS))

# %% [markdown]
# Mean ± standard deviation over seeds. `usage` is the fraction of the 128 tokens used at
# least once, `perplexity` the exponential of the entropy of their use, `alloc_entropy` 1 when
# the tokens are spread evenly over the clusters of the data, `min_tokens_per_cluster` the
# tokens of the worst-served cluster, `coverage` the fraction of data points near a
# reconstruction. FSQ's levels per coordinate multiply to the other quantizers' number of codes:
# {glue:text}`rem.fsq.levels`. The l2-normalised codes live in {glue:text}`rem.l2.dims`.

# %%
sizes = sorted({runs[recipes.BASELINE][0].config["codebook_size"], *cfg.codebook_sizes})
book.glue_text("rem.fsq.levels", "; ".join(f"{' × '.join(map(str, rem.fsq_levels(k)))} for {k:,} codes"
                                           for k in sizes))
book.glue_text("rem.l2.dims", "; ".join(f"{rem.l2_codebook_dim(t)} dimensions for token dimension {t}"
                                       for t in sorted(set(cfg.token_dims) | {cfg.token_dim})))
ex.summary_frame(table, ["dim", "remedy"], METRICS)

# %% [markdown]
# ## Embeddings collapse: a narrow encoder
#
# Notebook {doc}`04_embeddings_collapse` checks whether an encoder of hidden width 4 squeezes
# its embeddings into fewer effective dimensions than one of width 32 (the paper's §3.2). Most remedies act on the
# codebook, not on the encoder: here every recipe is trained again with the narrow encoder
# (hidden {glue:text}`rem.narrow`), and its embeddings' participation ratio (their effective
# dimension as a fraction of the latent dimension) is compared with the baseline's, narrow
# against narrow. These runs get their own budget (`narrow_epochs`, `narrow_n_per_cluster`).

# %%
book.glue_text("rem.narrow", str(cfg.narrow_hidden))
narrow_runs = ex.by_recipe(trained["narrow-encoder runs"], cfg.remedies)
narrow_table = ex.remedy_rows(narrow_runs, keys=("dim", "seed"))
NARROW_METRICS = ["participation_ratio", "coverage", "mse", "perplexity"]
ex.summary_frame(narrow_table, ["dim", "remedy"], NARROW_METRICS)

# %% [markdown]
# ## Tokens collapse on CIFAR-10
#
# The conv VQ-VAE of {doc}`03_tokens_collapse_cifar10` with every recipe. The loader looks in the
# `cifar10` parameter, then in `VQPAPER_CIFAR10`, then downloads with torchvision; it never
# switches silently to other data. At `ci` it takes the images of the `ci` manifest, as 03-05 do,
# wherever they come from. Codes used and perplexity are counted over the training
# images, the MSE over the test images. The `ci` profile leaves these runs out (`cifar=False`:
# every recipe at three seeds would not fit its budget); the `paper` profile runs them, and
# the test suite checks that each remedy acts on latents of CIFAR-10's size.

# %%
CIFAR_METRICS = ["codes_used", "usage", "perplexity", "test_mse"]
if cfg.cifar:
    data = ex.load_cifar(cfg)
    cifar_runs = ex.remedy_runs(run_list, "CIFAR-10 runs", cfg.remedies, data)
    cifar_table = ex.remedy_rows(cifar_runs, keys=("codebook_size", "seed"))
    all_cifar = [r for rs in cifar_runs.values() for r in rs]
    book.glue_text("rem.cifar.data", ex.cifar_data_description(data, all_cifar))
    display(ex.summary_frame(cifar_table, ["codebook_size", "remedy"], CIFAR_METRICS))
else:
    cifar_runs, cifar_table = {}, []
    book.glue_text("rem.cifar.data", f"not run at this execution (cifar=False, the {cfg.profile} profile's "
                                     f"choice); `vqpaper run 06 -p cifar True` runs them")

# %% [markdown]
# Data: {glue:text}`rem.cifar.data`.

# %% [markdown]
# ## At a glance
#
# Each cell compares a recipe with EMA-VQ from scratch on one metric, pair by pair (same data
# dimension or codebook size, same seed): the mean paired difference as a fraction of the
# baseline's mean, signed so that green is better, with its 95% interval below. Faded cells
# have an interval that includes zero, or a single pair.

# %%
grid = verdicts.effect_grid({"tokens": runs, "narrow": narrow_runs, "cifar": cifar_runs})  # a set not run: no column
# recorded: the per-seed numbers the cells are computed from (the regression check compares them
# statistically across machines; an effect near zero has no stable ratio to compare)
ex.record(cfg, "fig-remedies-heatmap", {
    "summary": ex.summary(table, ["dim", "remedy"], METRICS),
    "narrow_summary": ex.summary(narrow_table, ["dim", "remedy"], NARROW_METRICS),
    **({"cifar_summary": ex.summary(cifar_table, ["codebook_size", "remedy"], CIFAR_METRICS)} if cfg.cifar else {})})
book.figure(plots.plot_remedy_heatmap(grid), "fig-remedies-heatmap")

# %% [markdown]
# ```{glue:figure} fig-remedies-heatmap
# :name: fig-remedies-heatmap
#
# Every recipe against EMA-VQ from scratch: relative improvement (green) or worsening (red) of
# each metric, with its 95% interval; "(lower)" marks metrics where lower is better. Synthetic
# columns pool the data dimensions, seed by seed; faded cells are not decided.
# ```

# %% [markdown]
# ## Which remedy for which collapse?
#
# One family of checks per recipe and collapse, one check per setting, against EMA-VQ from
# scratch, seed by seed, as in notebooks 02–05 (`vqpaper.claims`): **tokens collapse** on the
# synthetic data (the perplexity of token use, per data dimension) and on CIFAR-10 (the
# perplexity over the training images, per codebook size), **embeddings collapse** (the
# participation ratio of the narrow encoder's embeddings, per data dimension). A family holds
# when every check holds; a check is not held when its interval lies below zero or inside the
# metric's smallest effect of interest (no effect), and inconclusive when its interval straddles
# zero and reaches beyond it, with a single seed, or when a run had not converged. These are
# the companion's questions, never counted among the paper's claims.

# %%
families = {collapse: verdicts.remedy_families(r, collapse)
            for collapse, r in (("tokens", runs), ("tokens-cifar", cifar_runs), ("embeddings", narrow_runs)) if r}
all_families = [f for fs in families.values() for f in fs]
checks_table = claims.publish(cfg, all_families, "fig-remedies-claims", "rem")
book.glue_table("rem.grid", verdicts.verdict_grid(families))
for collapse in verdicts.COLLAPSES:
    book.glue_text(f"rem.which.{collapse}", verdicts.which_sentence(families[collapse], collapse)
                   if collapse in families else verdicts.not_run_sentence(collapse, "cifar=False"))
book.glue_text("rem.library.runs", verdicts.library_run_sentence(families))

# %% [markdown]
# ```{glue} rem.grid
# ```
#
# Over the families: {glue:text}`rem.claims.summary`.
#
# - {glue:text}`rem.which.tokens`
# - {glue:text}`rem.which.tokens-cifar`
# - {glue:text}`rem.which.embeddings`
#
# Our EMA-VQ against the library's (the `lib` recipe): {glue:text}`rem.library.runs`
#
# Each check, with its effect and interval:

# %%
checks_table

# %% [markdown]
# **Convergence.** Every training stage behind a check, by the rule of `vqpaper.claims` (the
# loss's change over the stage's last quarter as a share of its whole fall, against the
# threshold; where a run recorded a checkpoint, the compared metric's drift since then):

# %%
claims.convergence_table(all_families)

# %% [markdown]
# ## Diagnose your own model
#
# The metrics behind these verdicts work on any VQ model's arrays. `vqpaper.diagnose(embeddings,
# indices, codebook, data=None, labels=None, reconstructions=None)` returns a report with the
# metrics, hints on both collapses, one figure and a self-contained HTML page; the command line
# does the same from an `.npz` (`vqpaper diagnose run.npz -o report.html`, arrays named
# `embeddings`, `indices`, `codebook`, and optionally `data`, `labels`, `reconstructions`) or
# from a run folder of the book's cache. Here, first seed: EMA-VQ from scratch and with
# pretraining (runs of notebook 02's kind) on the lowest data dimension, and a model of
# vector-quantize-pytorch (dead-code restarts, when that recipe ran) on the highest.

# %%
DIAGNOSED = {"scratch": (recipes.BASELINE, min(cfg.dims)),
             "pretrained": (recipes.pick_recipe(cfg.remedies, ("pretrained",)), min(cfg.dims)),
             "library": (recipes.pick_recipe(cfg.remedies, ("restart", "lib", "rotation", "l2", "fsq")), max(cfg.dims))}
reports = {}
for name, (recipe, dim) in DIAGNOSED.items():
    title = f"{dim}-D, {recipes.describe(recipe)}"
    [run] = ex.select(runs[recipe], dim=dim, seed=cfg.seeds[0])
    reports[name] = ex.diagnose_run(run, title)
    book.glue_text(f"rem.diag.{name}.title", title)
    book.glue_text(f"rem.diag.{name}.tokens", reports[name].hints[0])
    book.glue_text(f"rem.diag.{name}.embeddings", reports[name].hints[1])
    book.figure(reports[name].plot(), f"fig-remedies-diagnosis-{name}")
ex.record(cfg, "fig-remedies-diagnosis", {name: {k: v for k, v in r.metrics.items()} for name, r in reports.items()},
          seeds=cfg.seeds[:1])
report_path = reports["scratch"].to_html(paths.BUILD / "diagnosis-scratch.html")
reports["scratch"].to_frame()

# %% [markdown]
# {glue:text}`rem.diag.scratch.title`: {glue:text}`rem.diag.scratch.tokens`;
# {glue:text}`rem.diag.scratch.embeddings`.
#
# {glue:text}`rem.diag.pretrained.title`: {glue:text}`rem.diag.pretrained.tokens`;
# {glue:text}`rem.diag.pretrained.embeddings`.
#
# {glue:text}`rem.diag.library.title`: {glue:text}`rem.diag.library.tokens`;
# {glue:text}`rem.diag.library.embeddings`.
#
# ```{glue:figure} fig-remedies-diagnosis-scratch
# :name: fig-remedies-diagnosis-scratch
#
# `vqpaper.diagnose` on {glue:text}`rem.diag.scratch.title`: token use sorted by count (the dashed
# line: how many tokens hold 90% of the assignments), embeddings against used and unused tokens,
# tokens per cluster of the data.
# ```
#
# ```{glue:figure} fig-remedies-diagnosis-pretrained
# :name: fig-remedies-diagnosis-pretrained
#
# The same report for {glue:text}`rem.diag.pretrained.title`.
# ```
#
# ```{glue:figure} fig-remedies-diagnosis-library
# :name: fig-remedies-diagnosis-library
#
# The same report for {glue:text}`rem.diag.library.title`; with tokens of more than one
# dimension the middle panel projects embeddings and tokens on the embeddings' first two
# principal components.
# ```
#
# The hints' thresholds (`vqpaper.diagnose.THRESHOLDS`) are rules of thumb measured on this
# book's runs; the numbers beside each hint say how far the model is from them.

# %% [markdown]
# ## Provenance

# %%
results.provenance_table(cfg.notebook)
