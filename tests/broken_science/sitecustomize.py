"""A deliberate scientific bug, for the regression check's sensitivity test (issue 9).

Python imports ``sitecustomize`` at start-up from the path, so a notebook kernel started with
this folder on ``PYTHONPATH`` runs with the bug, while the repository's code stays untouched.
``VQPAPER_BREAK`` picks the bug:

* ``ema-half``: the EMA update (eq. 3-5) skips every token with an odd index, as a masking
  bug would: those tokens keep their K-means position and never learn.
* ``decay``: the EMA decay is 0.5 instead of the configured value (0.9 on synthetic data).
"""
import os

_BUG = os.environ.get("VQPAPER_BREAK", "")

if _BUG:
    import vqpaper.quantizers as _q

    if _BUG == "ema-half":
        _update = _q.EMAQuantizer.ema_update

        def _ema_update_half(self, z, indices):
            # the odd tokens' statistics and positions, as they were before the update (a group's
            # buffers have a model axis in front: the token axis counts from the end)
            before = (self.codebook[..., 1::2, :].clone(), self.embed_sum[..., 1::2, :].clone(),
                      self.cluster_size[..., 1::2].clone())
            _update(self, z, indices)
            self.codebook[..., 1::2, :], self.embed_sum[..., 1::2, :], self.cluster_size[..., 1::2] = before

        _q.EMAQuantizer.ema_update = _ema_update_half
    elif _BUG == "decay":
        _init = _q.EMAQuantizer.__init__

        def _init_decay(self, *args, **kwargs):
            _init(self, *args, **kwargs)
            self.decay = 0.5

        _q.EMAQuantizer.__init__ = _init_decay
    else:
        raise ValueError(f"VQPAPER_BREAK={_BUG!r}: expected 'ema-half' or 'decay'")
