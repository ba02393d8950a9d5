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
# # Preliminaries: vector quantization and its initialisation
#
# This chapter sets up the pieces the later chapters measure. A VQ-VAE
# {cite}`vandenoord2017vqvae` has an encoder $E_\theta$ that maps each data point $x_j$ to
# continuous *embeddings* $z_j$, a codebook of $S$ *tokens* $\mathcal{T} = \{t_1, \dots, t_S\}$
# (Zhao et al. {cite}`zhao2024collapse` say "token" rather than "code" to keep *tokens collapse*
# apart from the older term *codebook collapse*), and a decoder that reconstructs $x_j$ from
# the quantized embeddings $\hat z_j$. Each section below gives one equation of the paper
# (§2.1 and §5.1) and runs the matching function of `vqpaper` on a small example, so the code
# can be read next to the mathematics.
#
# The last section reproduces the paper's Fig. 2, the observation that motivates its first
# remedy: the outputs of an *untrained* encoder, from which the tokens are usually initialised,
# occupy a much narrower range than those of a trained one.

# %% tags=["parameters", "remove-cell"]
profile = "ci"          # ci is minutes on a laptop CPU and paper uses the paper epochs
seeds = None            # list of model seeds and None means the seeds of the profile
dim = None              # dimension of the synthetic data
token_dim = None        # token dimension which must divide dim
scratch_epochs = None   # VQ epochs of the scratch runs after their initialisation
pretrain_epochs = None  # autoencoder epochs before the trained encoder is read out
finetune_epochs = None  # VQ epochs of the pretrained runs after their initialisation
n_per_cluster = None    # points per cluster with 10 clusters
data_seed = None        # seed of the synthetic data kept apart from the model seeds
device = None           # auto or cpu or cuda

# %%
import numpy as np
import pandas as pd
import torch

from vqpaper import book, claims, experiments as ex, metrics, plots, quantizers, results, verdicts

cfg = ex.setup("01_preliminaries", profile, globals())
ex.parameters_table(cfg)

# %% [markdown]
# ## 1. Quantization: the nearest token (eq. 1)
#
# Every embedding is replaced by the token closest to it in Euclidean distance:
#
# $$
# \hat z_j = t_{k_j}, \qquad k_j = \arg\min_{k \in \{1, \dots, S\}} \lVert z_j - t_k \rVert .
# $$
#
# `vqpaper.quantizers.nearest_token` returns the index $k_j$ and the squared distance. It never
# forms the full $N \times S$ distance matrix: it uses
# $\lVert z - t \rVert^2 = \lVert z \rVert^2 - 2\, z \cdot t + \lVert t \rVert^2$ on tiles of
# rows and tokens, which matters for the codebooks of up to $2^{16}$ tokens in the CIFAR-10
# chapter. Below, five 2-D embeddings meet a codebook of four tokens.

# %%
codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
z = torch.tensor([[0.1, 0.2], [0.9, -0.1], [0.4, 0.7], [1.2, 0.8], [0.45, 0.45]])
indices, sq_dist = quantizers.nearest_token(z, codebook)
pd.DataFrame({"embedding z": z.tolist(), "token index k": indices.tolist(),
              "token t_k": codebook[indices].tolist(), "squared distance": sq_dist.numpy().round(3)})

# %% [markdown]
# The quantizer module wraps this search. In the forward pass its output is exactly the chosen
# codebook rows, which the next cell checks (a failed check stops the build):

# %%
vq = quantizers.EMAQuantizer(codebook_size=4, token_dim=2, kmeans_init="none").eval()
vq.codebook.copy_(codebook)
quantized, vq_indices, _ = vq(z)
assert torch.equal(quantized, codebook[vq_indices]), "the quantizer's output is not the chosen tokens"
assert torch.equal(vq_indices, indices), "the quantizer chose other tokens than nearest_token"

# %% [markdown]
# ## 2. Initialising the tokens with K-means (eq. 2)
#
# Following SoundStream {cite}`zeghidour2021soundstream`, the paper initialises the tokens as the
# K-means centroids of the encoder outputs $z_1, \dots, z_N$, which minimise
#
# $$
# \sum_{j=1}^{N} \sum_{k=1}^{S} r_{jk} \, \lVert z_j - t_k \rVert^2, \qquad
# r_{jk} = \begin{cases} 1 & \text{if } z_j \text{ is assigned to } t_k, \\ 0 & \text{otherwise.} \end{cases}
# $$
#
# `vqpaper.quantizers.kmeans` runs Lloyd's algorithm: start from $S$ randomly chosen embeddings,
# then alternate the assignment (eq. 1) and moving each token to the mean of its embeddings.
# Here it initialises 128 tokens from the outputs of a freshly initialised encoder on the
# 10-cluster data (first model seed). The objective of eq. (2) falls with the iterations:

# %%
X, y, Z = ex.untrained_embeddings(cfg, cfg.seeds[0])
rows = []
for iters in (0, 1, 3, 10):
    tokens, counts = quantizers.kmeans(Z, 128, iters=iters, seed=0)
    rows.append({"K-means iterations": iters, "objective of eq. 2": float(quantizers.nearest_token(Z, tokens)[1].sum()),
                 "tokens used": int((counts > 0).sum())})
pd.DataFrame(rows)

# %% [markdown]
# Whatever the encoder outputs look like, the centroids lie inside their range: an encoder whose
# outputs are bunched together produces tokens that are bunched together too. Section 6 checks
# whether an untrained encoder's outputs are bunched together, seed by seed:
# {glue:text}`claim.pre-range-narrower.phrase`
#
# **Which embeddings?** The paper runs K-means on the encoder outputs of the whole training set.
# SoundStream and common libraries use only the first training batch. `EMAQuantizer` has a switch
# for this, `kmeans_init="dataset"` (the caller passes every training embedding to
# `init_codebook`, as `vqpaper.train` does) or `kmeans_init="batch"` (the quantizer initialises
# itself from the first batch it sees in training mode). Both, on the same untrained encoder
# (the training batch size is 256 points, each giving `dim / token_dim` latents):

# %%
n_batch = 256 * (cfg.dim // cfg.token_dim)
rows = []
for mode, vectors in (("dataset", Z), ("batch", Z[:n_batch])):
    q = quantizers.EMAQuantizer(128, cfg.token_dim, kmeans_init=mode)
    if mode == "dataset":
        q.init_codebook(vectors)
    else:
        q.train()(vectors)  # the first training batch triggers the initialisation
    t = q.codebook.reshape(-1)
    rows.append({"kmeans_init": mode, "embeddings seen": vectors.shape[0],
                 "token range": f"[{float(t.min()):.3f}, {float(t.max()):.3f}]",
                 "embedding range": f"[{float(Z.min()):.3f}, {float(Z.max()):.3f}]"})
pd.DataFrame(rows)

# %% [markdown]
# ## 3. Learning the tokens by exponential moving averages (eq. 3–5)
#
# Instead of a codebook loss, the paper updates each token as a running mean of the embeddings
# assigned to it, as proposed in the VQ-VAE paper {cite}`vandenoord2017vqvae`. At iteration $o$,
# with $m_k^{(o)}$ the sum and $l_k^{(o)}$ the number of the batch's embeddings whose nearest
# token is $t_k$, and decay $\gamma$:
#
# $$
# M_k^{(o)} = \gamma M_k^{(o-1)} + (1 - \gamma)\, m_k^{(o)}, \qquad
# L_k^{(o)} = \gamma L_k^{(o-1)} + (1 - \gamma)\, l_k^{(o)}, \qquad
# t_k^{(o)} = \frac{M_k^{(o)}}{L_k^{(o)}} .
# $$
#
# A hand example: two 1-D tokens at 0 and 1, each with $L_k = 1$ (so $M_k = t_k$), decay
# $\gamma = 0.9$, and a batch of three embeddings, 0.2 and 0.4 (nearest to $t_1 = 0$) and 1.5
# (nearest to $t_2 = 1$). One training step of `EMAQuantizer`:

# %%
ema = quantizers.EMAQuantizer(codebook_size=2, token_dim=1, decay=0.9, kmeans_init="none")
ema.codebook.copy_(torch.tensor([[0.0], [1.0]]))
ema.embed_sum.copy_(ema.codebook)   # M_k = t_k * L_k with L_k = 1
ema.cluster_size.fill_(1.0)
before = {"M before": ema.embed_sum[:, 0].tolist(), "L before": ema.cluster_size.tolist(),
          "t before": ema.codebook[:, 0].tolist()}
ema.train()(torch.tensor([[0.2], [0.4], [1.5]]))
after = {"M after": ema.embed_sum[:, 0].tolist(), "L after": ema.cluster_size.tolist(),
         "t after": ema.codebook[:, 0].tolist(), "M / L": (ema.embed_sum[:, 0] / ema.cluster_size).tolist()}
# the hand computation below, checked: t_1 = 0.06 / 1.1, t_2 = 1.05
assert torch.allclose(ema.codebook[:, 0], torch.tensor([0.06 / 1.1, 1.05])), "EMA update differs from eq. (3)-(5)"
pd.DataFrame({**before, **after}, index=["token 1", "token 2"]).round(4)

# %% [markdown]
# By hand: $M_1 = 0.9 \cdot 0 + 0.1 \cdot (0.2 + 0.4) = 0.06$, $L_1 = 0.9 \cdot 1 + 0.1 \cdot 2 = 1.1$,
# so $t_1 = 0.06 / 1.1 \approx 0.0545$; $M_2 = 0.9 + 0.1 \cdot 1.5 = 1.05$, $L_2 = 0.9 + 0.1 = 1$,
# so $t_2 = 1.05$. Each token moves a tenth of the way towards the mean of its new embeddings,
# weighted by how many there were.
#
# **Tokens that no embedding chooses.** Such a token has $m_k = l_k = 0$: by eq. (5) its $M_k$ and
# $L_k$ shrink by the same factor $\gamma$ and it stays where it is. This is why the initial
# positions of the tokens matter so much: a token initialised far from every embedding is never
# pulled back. Common implementations do something else. DeepMind's sonnet
# {cite}`sonnet2018vqvae` and the `vector-quantize-pytorch` library Laplace-smooth $L$ before
# dividing, $t_k = M_k / \tilde L_k$ with
# $\tilde L_k = \frac{L_k + \epsilon}{\sum_i L_i + S \epsilon} \sum_i L_i$, so that a long-unused
# token does not divide by nearly zero. For an unused token $M_k$ decays to zero while $\tilde L_k$
# stays near $\epsilon$: the smoothing drags it to the origin. `EMAQuantizer` offers both,
# `update="eq5"` and `update="laplace"`, and so does every run configuration (`ema_update`). **This
# book uses `"eq5"`, the paper's equation, by default**: we reproduce the paper, and the smoothing
# would add a second effect (unused tokens piling up at the origin) that the paper does not
# describe. (Dividing $M_k$ by $L_k$ literally fails too, in float32: after about a thousand unused
# steps at $\gamma = 0.9$ both sink below the smallest normal number, where their ratio is no longer
# the token; `"eq5"` therefore keeps an unused token's position as it is rather than recomputing it.)
#
# Below, two tokens at {glue:text}`pre.unused.used` share embeddings drawn uniformly from
# {glue:text}`pre.unused.data`, and two tokens at {glue:text}`pre.unused.start` are farther from
# every embedding; decay $\gamma = 0.9$, {glue:text}`pre.unused.batch` embeddings per step, the same
# batches for both updates. Positions of the two unused tokens:

# %%
demo = {"used": [2.25, 2.75], "unused": [-1.5, 1.0], "data": (2.0, 3.0), "batch_size": 256}
demo_steps = [0, 50, 100, 200, 500, 1000, 2000]
unused_rows = ex.unused_token_positions(**demo, record_at=demo_steps, decay=0.9)
unused = pd.DataFrame(unused_rows)
eq5, laplace = unused[unused["update"] == "eq5"], unused[unused["update"] == "laplace"]
eq5_moved = float((eq5["position"] - eq5["token start"]).abs().max())
assert eq5_moved == 0.0, f"eq. (5) moved an unused token by {eq5_moved}"
book.glue_text("pre.unused.used", " and ".join(f"{t:g}" for t in demo["used"]))
book.glue_text("pre.unused.data", "[{:g}, {:g}]".format(*demo["data"]))
book.glue_text("pre.unused.start", " and ".join(f"{t:g}" for t in demo["unused"]))
book.glue_text("pre.unused.batch", str(demo["batch_size"]))
book.glue_text("pre.unused.eq5.moved", f"{eq5_moved:g}")
for step in (100, 200, demo_steps[-1]):
    at = laplace[laplace.step == step].sort_values("token start")
    book.glue_text(f"pre.unused.laplace.{step}", " and ".join(f"{p:.2g}" for p in at["position"]))
book.glue_text("pre.unused.last_step", f"{demo_steps[-1]:,}")
ex.record(cfg, "fig-unused-tokens", {"rows": unused_rows})
unused.pivot(index="step", columns=["update", "token start"], values="position")

# %% [markdown]
# Under eq. (5) the unused tokens moved by {glue:text}`pre.unused.eq5.moved` in
# {glue:text}`pre.unused.last_step` steps. Under the Laplace smoothing they were at
# {glue:text}`pre.unused.laplace.100` after 100 steps, {glue:text}`pre.unused.laplace.200` after
# 200 and {glue:text}`pre.unused.laplace.2000` after {glue:text}`pre.unused.last_step`. A pile of
# unused tokens at zero in a trained codebook (`metrics.dead_tokens_near_origin`) is therefore a
# mark of the smoothed update, not of the initialisation, which never places a token there
# (section 2: an emptied K-means cluster keeps its previous centre).

# %% [markdown]
# ## 4. Gradients through the quantizer: the straight-through estimator
#
# The argmin of eq. (1) has no useful gradient. VQ-VAE copies the decoder's gradient with respect
# to $\hat z_j$ onto $z_j$ unchanged, the straight-through estimator {cite}`bengio2013estimating`.
# In code, $\hat z = z + \mathrm{sg}(t_{k} - z)$ with $\mathrm{sg}$ the stop-gradient: the
# forward value is the token, the backward pass is the identity. The encoder is also pulled
# towards its tokens by the commitment loss $\beta\, \lVert z - \mathrm{sg}(t_k) \rVert^2$;
# the tokens themselves get no gradient (they are buffers, learned by eq. 3–5).
# A check on the five embeddings of section 1, with an arbitrary gradient arriving from
# the decoder:

# %%
z_in = z.clone().requires_grad_(True)
quantized, _, _ = vq(z_in)
upstream = torch.randn(quantized.shape, generator=torch.Generator().manual_seed(0))
quantized.backward(upstream)
assert torch.equal(quantized.detach(), codebook[indices]), "forward value is not the tokens"
assert torch.equal(z_in.grad, upstream), "gradient on z differs from the gradient on z_hat"
assert not vq.codebook.requires_grad, "the tokens receive a gradient"

# %% [markdown]
# ## 5. Measuring how the tokens are used: perplexity and usage
#
# With $p_k$ the fraction of all embeddings of the evaluation set assigned to token $t_k$,
#
# $$
# \text{perplexity} = \exp\Big(-\sum_{k:\,p_k > 0} p_k \log p_k\Big), \qquad
# \text{usage} = \frac{\#\{k : p_k > 0\}}{S} .
# $$
#
# The perplexity is the number of equally used tokens that would give the same entropy: $S$
# for uniform use, 1 when every embedding goes to one token. Usage counts a token as soon as
# one embedding picks it. Both are computed over the whole evaluation set, not averaged over
# batches (a batch of $B$ embeddings cannot show a perplexity above $B$). Three index lists
# over $S = 128$ tokens, 1,024 embeddings each:

# %%
S = 128
index_lists = {
    "uniform": np.arange(1024) % S,
    "collapsed: 4 tokens take 92 %": np.concatenate([np.repeat(np.arange(4), 236), np.arange(4, 84)]),
    "one token": np.zeros(1024, dtype=int),
}
usage_demo = pd.DataFrame([{"indices": name, "perplexity": metrics.perplexity(idx, S), "usage": metrics.usage(idx, S)}
                           for name, idx in index_lists.items()]).set_index("indices")
book.glue_text("pre.demo.collapsed.perplexity", f"{usage_demo['perplexity'].iloc[1]:.1f}")
book.glue_text("pre.demo.collapsed.usage", f"{usage_demo['usage'].iloc[1]:.2f}")
usage_demo.round(3)

# %% [markdown]
# The collapsed list has a usage of {glue:text}`pre.demo.collapsed.usage` yet a perplexity of
# only {glue:text}`pre.demo.collapsed.perplexity`:
# usage alone hides a collapse, so the later chapters report both, together with measures
# that look at *where* the tokens sit (allocation over clusters, peaks, coverage).

# %% [markdown]
# ## 6. What the tokens are initialised from
#
# The paper explains tokens collapse by the embeddings that K-means sees at initialisation: an
# untrained encoder maps most inputs to similar outputs, so the tokens start bunched in a small
# interval. In the paper's Fig. 2 the untrained encoder's outputs lie between about −0.1 and 0.2 and
# show 5 peaks, while the trained encoder's outputs are spread out and show 10 peaks, one per
# cluster of the input.
#
# We read these embeddings off real runs (`vqpaper.train`). For each seed, a run trained from
# scratch records the outputs of the untrained encoder on the whole training set, the input of
# its K-means initialisation; a run with pretraining records the outputs of the same
# architecture after {glue:text}`pre.pretrain_epochs` epochs of autoencoder training, again
# just before K-means. Nothing after the initialisation affects these outputs, so both runs
# stop after {glue:text}`pre.vq_epochs` epoch(s) of VQ training, which we do not use here.
# The data are {glue:text}`pre.dim`-dimensional with token dimension {glue:text}`pre.token_dim`,
# so each point gives {glue:text}`pre.dim` numbers, its coordinates in the encoder's output, and
# K-means sees all of them.

# %%
runs = ex.run_sweep(ex.run_list(cfg), "Fig. 2 runs")
enc = ex.encoder_output_rows(runs)
coords = ex.encoder_output_coordinates(runs)
pd.DataFrame(enc).round(3)

# %% [markdown]
# The untrained encoder of a scratch run is built like the one of section 2, with the same
# seed; the next cell checks that the run recorded the same embeddings as that demo.

# %%
assert np.allclose(ex.select(runs, method="scratch", seed=cfg.seeds[0])[0].arrays["Z_init"].reshape(-1),
                   Z.numpy().reshape(-1)), "the scratch run's untrained encoder differs from section 2's"

# %% [markdown]
# **How we count peaks.** The paper counts the peaks of one histogram and compares them with the
# 10 clusters of its input. Our input is {glue:text}`pre.dim`-dimensional: projected on one axis, its
# clusters overlap, and the input itself shows only {glue:text}`pre.input.peaks` peaks per
# coordinate. Pooling the coordinates of the encoder outputs into one histogram, as a first
# version of this chapter did, compared them with 10 peaks that not even the input shows: "the
# trained encoder shows 10 peaks" could not pass and "the untrained one shows fewer" could not
# fail. So each coordinate of the encoder outputs is compared with the *same coordinate of the
# input*. The encoder mixes the input's coordinates, so the two are different 1-D views of the
# same points, not the same axis; what the comparison asks is whether a view through the encoder
# shows the modes a plain view of the input shows. A pair is a **seed**: the coordinates of one
# run are not independent draws, so each seed contributes the mean over its coordinates. Fig. 2's
# sentences become three checks, each of which can go either way (`vqpaper.verdicts`):
#
# * range (Fig. 2 (a)): the trained encoder's outputs span a wider range than the untrained
#   encoder's, as a ratio (log scale), beyond the smallest effect of interest of 10%;
# * fewer peaks (Fig. 2 (a)): the input shows more peaks than the untrained encoder's outputs,
#   by more than half a peak;
# * the same peaks (Fig. 2 (b)): the trained encoder's outputs show *as many* peaks as the input,
#   a claim of sameness: it holds when the interval of the difference lies within ±½ peak, and
#   fails when it excludes zero and reaches beyond, either way.
#
# The checks on the trained encoder read it after its autoencoder pretraining, so they count only
# if that stage's loss had flattened (the convergence table below).

# %%
pd.DataFrame(coords).round(3)

# %%
panels = ex.encoder_output_coordinate_panels(runs, coords)
fig = plots.plot_encoder_outputs(panels, ncols=2 * cfg.dim,
                                 suptitle="Encoder outputs used for the K-means initialisation, per coordinate")
book.figure(fig, "fig-encoder-outputs")

# %% [markdown]
# ```{glue:figure} fig-encoder-outputs
# :name: fig-encoder-outputs
#
# Histograms of the encoder outputs on the 10-cluster data (the paper's Fig. 2), one row per seed
# for the first {glue:text}`pre.seeds_shown` of {glue:text}`pre.n_seeds` seeds (all of them enter
# the tables and the checks): each
# coordinate of the untrained encoder's outputs, then of the trained encoder's (after autoencoder
# pretraining). The black curve is a Gaussian kernel density estimate, the dashed lines its peaks;
# each title gives the input's peak count for the same coordinate, and the range and peak count
# of the outputs. The horizontal axes differ between panels: compare the ranges in the titles.
# ```

# %%
u_range = [e["range"] for e in enc if e["encoder"] == "untrained"]
t_range = [e["range"] for e in enc if e["encoder"] == "trained"]
ratios = [t / u for t, u in zip(t_range, u_range)]
untrained = [e for e in enc if e["encoder"] == "untrained"]
book.glue_text("pre.untrained.range", ex.mean_std_text(u_range))
book.glue_text("pre.trained.range", ex.mean_std_text(t_range))
book.glue_text("pre.range_ratio", ex.mean_std_text(ratios, ".1f"))
book.glue_text("pre.range_ratio_min", f"{min(ratios):.1f}")
book.glue_text("pre.untrained.interval", f"[{np.mean([e['min'] for e in untrained]):.2f}, "
                                         f"{np.mean([e['max'] for e in untrained]):.2f}]")
book.glue_text("pre.input.peaks", ex.range_text(sorted({c["input peaks"] for c in coords})))
book.glue_text("pre.untrained.peaks", ex.range_text([c["peaks"] for c in coords if c["encoder"] == "untrained"]))
book.glue_text("pre.trained.peaks", ex.range_text([c["peaks"] for c in coords if c["encoder"] == "trained"]))
book.glue_text("pre.n_seeds", str(len(cfg.seeds)))
book.glue_text("pre.seeds_shown", str(min(len(cfg.seeds), ex.FIG2_SEEDS_SHOWN)))
book.glue_text("pre.pretrain_epochs", str(cfg.pretrain_epochs))
book.glue_text("pre.vq_epochs", ex.range_text(sorted({cfg.scratch_epochs, cfg.finetune_epochs})))
book.glue_text("pre.dim", str(cfg.dim))
book.glue_text("pre.token_dim", str(cfg.token_dim))
ex.record(cfg, "fig-encoder-outputs",
          {"per_run": enc, "per_coordinate": coords,
           "summary": {"untrained_range": ex.aggregate(u_range), "trained_range": ex.aggregate(t_range),
                       "range_ratio": ex.aggregate(ratios)}})

# %% [markdown]
# Over {glue:text}`pre.n_seeds` seeds, the untrained encoder's outputs span
# {glue:text}`pre.untrained.range` (on average the interval {glue:text}`pre.untrained.interval`),
# the trained encoder's {glue:text}`pre.trained.range` (mean ± standard deviation over seeds): a
# ratio of {glue:text}`pre.range_ratio`, at least {glue:text}`pre.range_ratio_min` in every seed.
# K-means centroids lie inside the range of the vectors they are computed from, so the tokens of
# a scratch run all start inside that narrow interval. Per coordinate, the kernel density
# estimate finds {glue:text}`pre.untrained.peaks` peaks for the untrained encoder,
# {glue:text}`pre.trained.peaks` for the trained one and {glue:text}`pre.input.peaks` for the input.

# %% [markdown]
# ## Do the paper's claims hold here?
#
# One family of checks per sentence of the paper, seed by seed, checked on the numbers above; the
# verdicts and the sentences below are computed from them, not written by hand. The table gives,
# per claim, the paper's words, the outcome, the effect with its 95% interval, the seeds used and
# how many seeds would decide it with 80% and 95% probability.

# %%
families = verdicts.encoder_output_families(runs, enc, coords)
claims.publish(cfg, families, "fig-encoder-outputs-claims", prefix="pre")
claims.overview(families)

# %% [markdown]
# {glue:text}`pre.claims.paper_count`.
#
# * Range (Fig. 2 (a)): {glue:text}`claim.pre-range-narrower.phrase`
# * Peaks of the untrained encoder (Fig. 2 (a)): {glue:text}`claim.pre-untrained-fewer-peaks.phrase`
# * Peaks of the trained encoder (Fig. 2 (b)): {glue:text}`claim.pre-trained-peaks-match-input.phrase`
#
# The verdicts in full: range, {glue:text}`claim.pre-range-ratio`; untrained peaks,
# {glue:text}`claim.pre-untrained-fewer-peaks-than-input`; trained peaks,
# {glue:text}`claim.pre-trained-peaks-as-input`.
# The next chapter tests what the paper infers from the narrow range: that tokens initialised
# there collapse onto a few clusters, and that pretraining prevents it.
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
