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
# # Tokens collapse on CIFAR-10
#
# Zhao et al. {cite}`zhao2024collapse` (§3.1.2, Fig. 4) carry the tokens-collapse argument of
# {doc}`02_tokens_collapse_synthetic` over to images. With the token dimension fixed, they
# expect a larger codebook to make the collapse *worse*: more tokens initialised from the
# narrow outputs of an untrained encoder crowd together even more. They sweep the codebook
# size $K$ from $2^4$ to $2^{16}$ and report that the VQ-VAE trained from scratch stops
# improving from $K = 2^{12}$ on (its test MSE and perplexity stagnate), while the model that
# was first pretrained as an autoencoder keeps lowering its MSE and raising its perplexity. At
# the smallest codebooks they see pretraining slightly *behind*.
#
# **Set-up.** A convolutional VQ-VAE in the style of the Sonnet example
# {cite}`sonnet2018vqvae`: two stride-2 convolutions ($32 \times 32 \to 8 \times 8$), two
# residual blocks, a $1 \times 1$ convolution to the token dimension, and a mirrored
# decoder; each image becomes $8 \times 8 = 64$ latent vectors that share one codebook. Adam
# (amsgrad), batch 128, $\beta = 0.25$, EMA decay 0.99, K-means initialisation of the tokens
# from the encoder outputs on the training images. *Scratch* trains the VQ-VAE from the start;
# *pretrained* first trains the autoencoder without VQ, then fine-tunes it with VQ. The paper
# uses 128 channels, token dimension 32, learning rate $3 \cdot 10^{-4}$ and 150 + 150 epochs
# against 300 on all training images, which the `paper` profile follows.
# {glue:text}`tcc.setup`
#
# **Measures.** Test MSE on pixels scaled to $[-0.5, 0.5]$, and, as Sonnet reports it, the MSE
# divided by the variance of the training pixels. Perplexity and usage (the fraction of
# tokens used at least once) are computed over the latents of the **training** images: at
# the largest codebooks the test split has fewer latents than there are tokens, which would
# cap both.

# %% tags=["parameters", "remove-cell"]
profile = "ci"            # "ci" for minutes on a laptop CPU or "paper" for the paper settings
codebook_sizes = None     # list of codebook sizes K to sweep, None means the sizes of the profile
token_dim = None          # dimension of a token and of a latent vector
channels = None           # width of the convolutional encoder and decoder
residual_channels = None  # hidden channels of the residual blocks
scratch_epochs = None     # VQ-VAE trained from scratch
pretrain_epochs = None    # autoencoder pretraining ...
finetune_epochs = None    # ... then VQ fine-tuning
train_images = None       # use only this many training images, None means all of them
kmeans_vectors = None     # K-means initialisation on a random sample of this many latents, None means all
lr = None                 # learning rate of Adam (amsgrad); the paper's is 3e-4
seeds = None              # list of model seeds
cifar10 = None            # path to an npz file or a torchvision folder, None means env VQPAPER_CIFAR10 or a download
device = None             # "auto", "cpu" or "cuda"

# %%
from vqpaper import book, claims, experiments as ex, plots, results, verdicts

cfg = ex.setup("03_tokens_collapse_cifar10", profile, globals())
book.glue_text("tcc.setup", ex.budget_sentence(cfg))
ex.parameters_table(cfg)

# %% [markdown]
# ## Data
#
# The loader looks in the `cifar10` parameter, then in the environment variable
# `VQPAPER_CIFAR10`, then downloads with torchvision; it never switches silently to other
# data.

# %%
data = ex.load_cifar(cfg)
data.description

# %% [markdown]
# ## Sweep the codebook size, both recipes
#
# Each run is stored under a key of its full configuration and of the data it saw
# (`vqpaper.sweeps`), so re-executing the notebook reuses finished runs.

# %%
runs = ex.run_sweep(ex.run_list(cfg), "CIFAR-10 runs", data)
data_used = book.glue_text("tcc.data", ex.cifar_data_description(data, runs))
table = ex.rows(runs, keys=("codebook_size", "method", "seed"))
METRICS = ["test_mse", "test_mse_normalised", "perplexity", "usage", "codes_used", "test_perplexity"]
ex.summary_frame(table, ["codebook_size", "method"], METRICS)

# %% [markdown]
# ## Test MSE and perplexity against the codebook size
#
# What the paper shows in its Fig. 4. Data of every run in this notebook: {glue:text}`tcc.data`.

# %%
fig = plots.plot_sweep(table, x="codebook_size", ys=["test_mse", "perplexity", "usage"], hue="method",
                       ylog=["perplexity"],
                       titles=["test MSE", "perplexity (training images)", "usage (training images)"])
book.figure(fig, "fig-tokens-collapse-cifar10")
agg = ex.summary(table, ["codebook_size", "method"], METRICS)
n_train, n_test = int(runs[0].metrics["n_train"]), int(runs[0].metrics["n_test"])
ex.record(cfg, "fig-tokens-collapse-cifar10",
               {"data": data_used, "n_train": n_train, "n_test": n_test, "summary": agg})
book.glue_text("tcc.n_train", f"{n_train:,}")
book.glue_text("tcc.n_test", f"{n_test:,}")
FORMATS = {"test_mse": ".4f", "test_mse_normalised": ".3f", "perplexity": ",.0f", "usage": ".1%", "codes_used": ",.0f"}
book.glue_means("tcc", agg, FORMATS)
book.glue_means("tcc.largest", {m: agg[f"{max(cfg.codebook_sizes)}/{m}"] for m in ("scratch", "pretrained")}, FORMATS)

# %% [markdown]
# ```{glue:figure} fig-tokens-collapse-cifar10
# :name: fig-tokens-collapse-cifar10
#
# Test MSE (left), perplexity (middle, log scale) and usage (right) against the codebook
# size, for the VQ-VAE trained from scratch and the pretrained-then-fine-tuned one (the
# paper's Fig. 4). Perplexity and usage are over the {glue:text}`tcc.n_train` training images, the MSE
# over the {glue:text}`tcc.n_test` test images. Data: {glue:text}`tcc.data`.
# ```

# %% [markdown]
# ## Reconstructions at the largest codebook
#
# The first test images (top rows) and their reconstructions (bottom rows) by the two models
# with the largest codebook of the sweep, first seed.

# %%
k_max, first = max(cfg.codebook_sizes), cfg.seeds[0]
book.glue_text("tcc.k_max", f"{k_max:,}")
for m, figure_id in (("scratch", "fig-tokens-collapse-cifar10-images"),
                     ("pretrained", "fig-tokens-collapse-cifar10-images-pretrained")):
    r = ex.select(runs, codebook_size=k_max, method=m, seed=first)[0]
    fig = plots.plot_image_grid(r.arrays["test_images"], r.arrays["test_recon"],
                                titles=("test images", f"{m}\nreconstructions"),
                                suptitle=f"{m}, K = {k_max:,}: test MSE {r.metrics['test_mse']:.4f}")
    book.figure(fig, figure_id)
    ex.record(cfg, figure_id, {"data": data_used, "n_train": n_train, "n_test": n_test,
                               "codebook_size": k_max, "method": m, "test_mse": r.metrics["test_mse"],
                               "shown_test_images": int(r.arrays["test_images"].shape[0])}, seeds=[first])

# %% [markdown]
# ```{glue:figure} fig-tokens-collapse-cifar10-images
# :name: fig-tokens-collapse-cifar10-images
#
# Test images and their reconstructions by the VQ-VAE trained from scratch, codebook size
# {glue:text}`tcc.k_max`. Data: {glue:text}`tcc.data`.
# ```
#
# ```{glue:figure} fig-tokens-collapse-cifar10-images-pretrained
# :name: fig-tokens-collapse-cifar10-images-pretrained
#
# The same test images reconstructed by the pretrained-then-fine-tuned VQ-VAE, codebook size
# {glue:text}`tcc.k_max`.
# ```

# %% [markdown]
# ## Do the paper's claims hold here?
#
# Each sentence of the paper's §3.1.2 and of Fig. 4's caption is one family of checks comparing
# the two recipes seed by seed, with a 95% interval of the paired difference against the
# metric's smallest effect of interest (`vqpaper.claims`). "Large" codebooks are those of
# $2^{12}$ tokens and more, where the paper sees the scratch model stall (if the sweep has none,
# its largest size, when it has two or more). "Continually increasing perplexity" and
# "decreasing MSE" are trends: per seed, the least-squares slope of log perplexity (log test MSE)
# over log K across every size of the sweep, which needs three sizes or more. Stagnation "from
# $2^{12}$" is a claim of sameness on the scratch model's slope over the sizes from $2^{12}$ on
# (two or more): it holds when the slope's interval lies within ±δ. A family the sweep cannot test
# is left out with what would test it, never replaced by a comparison of a size with itself.

# %%
sizes = sorted(cfg.codebook_sizes)
k_min = sizes[0]
smallest_gap = ex.per_seed_ratio(runs, "test_mse", "method", "pretrained", "scratch", codebook_size=k_min)
# growth over the whole sweep, smallest to largest K (none with one size: no size is compared with itself)
growth = {m: ex.per_seed_ratio(runs, "perplexity", "codebook_size", k_max, k_min, method=m)
          for m in ("scratch", "pretrained")} if len(sizes) > 1 else {}
book.glue_text("tcc.k_min", f"{k_min:,}")
for m in ("scratch", "pretrained"):
    book.glue_text(f"tcc.growth.{m}", f"{ex.aggregate(growth[m])['mean']:.1f}×" if growth
                   else "not measured (one codebook size)")
book.glue_text("tcc.smallest.mse_ratio", f"{ex.aggregate(smallest_gap)['mean']:.3f}")
book.glue_text("tcc.trend.sentence", verdicts.cifar_trend_sentence(runs, sizes))
ex.record(cfg, "fig-tokens-collapse-cifar10-ratios",
          {"data": data_used, "perplexity_growth": growth, "smallest_mse_ratio": smallest_gap})
families = verdicts.tokens_collapse_cifar(runs, sizes)
claims.publish(cfg, families, "fig-tokens-collapse-cifar10-claims", "tcc")
claims.overview(families)

# %% [markdown]
# {glue:text}`tcc.claims.paper_count`. {glue:text}`tcc.claims.left_out`
#
# - {glue:text}`claim.tcc-large-perplexity.phrase` {glue:text}`claim.tcc-large-mse.phrase`
#   At the largest codebook ({glue:text}`tcc.k_max` tokens) the model trained from scratch
#   reaches a perplexity of {glue:text}`tcc.largest.scratch.perplexity` against
#   {glue:text}`tcc.largest.pretrained.perplexity` with pretraining, and a test MSE of
#   {glue:text}`tcc.largest.scratch.test_mse` against {glue:text}`tcc.largest.pretrained.test_mse`
#   (normalised by the data variance: {glue:text}`tcc.largest.scratch.test_mse_normalised`
#   against {glue:text}`tcc.largest.pretrained.test_mse_normalised`).
# - {glue:text}`claim.tcc-pretrained-perplexity-rising.phrase`
#   {glue:text}`claim.tcc-pretrained-mse-falling.phrase`
#   {glue:text}`claim.tcc-scratch-stagnates.phrase` {glue:text}`tcc.trend.sentence`
#   From the smallest to the largest codebook the scratch perplexity grows
#   {glue:text}`tcc.growth.scratch`, the pretrained one {glue:text}`tcc.growth.pretrained`.
# - {glue:text}`claim.tcc-smallest-mse.phrase` At the smallest codebook
#   ({glue:text}`tcc.k_min` tokens) the pretrained model's test MSE is
#   {glue:text}`tcc.smallest.mse_ratio` times that of the model trained from scratch.
#
# The parameters table at the top says how this execution's budget compares with the paper's
# 300 epochs on all of CIFAR-10; the `paper` profile runs the paper's model and epochs on all of
# it.
#
# **Convergence.** Every training stage behind a check (pretraining included), by the rule of
# `vqpaper.claims`: the loss's change over the stage's last quarter as a share of its whole fall,
# against the threshold; where a run recorded a checkpoint, the compared metric's drift since then.

# %%
claims.convergence_table(families)

# %% [markdown]
# ## Provenance

# %%
results.provenance_table(cfg.notebook)
