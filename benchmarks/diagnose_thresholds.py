#!/usr/bin/env python
"""Where ``vqpaper.diagnose.THRESHOLDS["pr_kept"]`` and ``["agreement_kept"]`` come from.

    python benchmarks/diagnose_thresholds.py        # ~45 runs; ~20 min on 2 busy cores from a cold cache

Runs (or reads from the sweep cache) the synthetic runs that show embeddings collapse in the
book, and prints what ``vqpaper.diagnose`` measures on each, so the thresholds are measured
with the same code that applies them:

* notebook 04 at the ``ci`` profile: from scratch with encoder hidden 4, 8 and 32, pretrained
  with hidden 4 and 32 (2-D data with 1-D tokens, 8-D data with 4-D tokens, 3 seeds);
* notebook 06 at the ``ci`` profile: the EMA-VQ base runs (hidden 32) and the narrow-encoder
  runs (hidden 4);
* codes with fewer numbers than the data: 8-D data, encoders 8 -> H -> H -> 4 (one 4-D latent
  vector per point, :class:`CodeVQVAE`), H = 32 and 4, notebook 04's ci budget, 3 seeds (not
  cached: the cache key does not know the model class).

Prints one row per run and the range of each metric per encoder width, data and code size.
"""
from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vqpaper import config, experiments as ex, models, train  # noqa: E402
from vqpaper.diagnose import THRESHOLDS, Diagnosis, diagnose  # noqa: E402


class CodeVQVAE(models.MLPVQVAE):
    """The synthetic VQ-VAE with a code of ``token_dim`` numbers per point (one latent vector),
    fewer than the data's ``dim``: encoder dim -> H -> H -> token_dim, decoder token_dim -> 32 -> 32 -> dim
    (a group of models, as the trainer builds them; weights drawn from each model's seed)."""

    def __init__(self, dim, token_dim=1, encoder_hidden=32, decoder_hidden=32, quantizer=None, seeds=(0,)):
        super().__init__(dim, token_dim, encoder_hidden, decoder_hidden, quantizer, seeds=seeds)
        self.n_latents = 1
        self.encoder[-1] = models.GroupLinear(self.models, encoder_hidden, token_dim)
        self.decoder[0] = models.GroupLinear(self.models, token_dim, decoder_hidden)
        models._init_from_seeds(self, self.seeds)

    def encode(self, x):
        self._check_input(x, (self.dim,), "data")
        return self._mlp(self.encoder, x).view(self.models, x.shape[1], 1, self.token_dim)

    def decode(self, zq):
        return self._mlp(self.decoder, zq.reshape(self.models, zq.shape[1], self.token_dim))


def run_code(cfg: config.SyntheticRun) -> train.RunResult:
    """``train.run_synthetic`` with :class:`CodeVQVAE`: ``cfg.token_dim`` numbers per point for ``cfg.dim``-D data."""
    with mock.patch.object(train, "MLPVQVAE", CodeVQVAE):
        return train.run_synthetic(cfg)


def report(result) -> Diagnosis:
    a = result.arrays
    return diagnose(a["Z"], a["indices"], a["codebook"], data=a["X"], labels=a["y"])


def main() -> int:
    import pandas as pd

    c04 = config.notebook_config("04_embeddings_collapse", "ci")
    c06 = config.notebook_config("06_remedies", "ci")
    runs04, runs06 = ex.run_list(c04), ex.run_list(c06)
    baseline = [c for c in runs06["synthetic runs"] + runs06["narrow-encoder runs"]
                if c.quantizer == "ema" and c.method == "scratch" and c.kmeans_init == "dataset"]  # 06's base runs
    book = {"04 scratch": runs04["synthetic, scratch"], "04 pretrained": runs04["synthetic, pretrained"],
            "06": baseline}
    results = [(group, r) for group, cfgs in book.items() for r in ex.run_all(cfgs, desc=group)]
    for hidden in (32, 4):
        for seed in (0, 1, 2):
            cfg = config.SyntheticRun(dim=8, token_dim=4, encoder_hidden=hidden, epochs=c04.epochs,
                                      n_per_cluster=c04.n_per_cluster, data_seed=c04.data_seed, seed=seed).validate()
            results.append(("4-D code", run_code(cfg)))
    rows = []
    for group, r in results:
        c, m = r.config, report(r).metrics
        rows.append({"group": group, "dim": c["dim"], "code_dim": m["code_dim"], "hidden": c["encoder_hidden"],
                     "method": c["method"], "seed": c["seed"], "pr_kept": m["pr_kept"],
                     "agreement_kept": m["agreement_kept"], "label_agreement": m["label_agreement"],
                     "precision": r.metrics["precision"]})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 200)
    print(table.round(3).to_string(index=False))
    print("\nranges per encoder width, data and code size:")
    print(table.groupby(["hidden", "dim", "code_dim"])[["pr_kept", "agreement_kept"]].agg(["min", "max"])
          .round(3).to_string())
    print(f"\nTHRESHOLDS: pr_kept {THRESHOLDS['pr_kept']}, agreement_kept "
          f"{THRESHOLDS['agreement_kept']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
