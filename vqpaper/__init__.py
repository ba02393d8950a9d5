"""vqpaper: a reproducible companion to *Representation Collapsing Problems in Vector Quantization*.

Modules, one idea each, importing only from the floors below them (CONTRACTS.md): ``quantizers``
(EMA-VQ, SimVQ, K-means), ``remedies`` (vector-quantize-pytorch's quantizers), ``models``, ``data``,
``metrics`` (collapse metrics), ``config`` (the notebooks' parameters, the one checker), ``train``,
``sweeps`` (cached, resumable runs), ``claims`` (statistics of a verdict), ``experiments`` (each
notebook's runs and tables), ``verdicts`` (the paper's claims), ``results``/``regression`` (recorded
numbers), ``plots``, ``book`` (glue), ``runner`` (notebook execution) with ``progress`` (what a
running notebook is doing), ``cli``.
"""
__version__ = "0.1.0"

import os as _os

# OpenMP threads that wait at a barrier sleep rather than spin. With more than one torch thread
# per run (VQPAPER_THREADS) on a machine whose cores are busy with other work, spinning threads
# fight for the same cores at every one of the thousands of small parallel regions of a training
# step: measured on the 2-core CI machine with one core kept busy, one notebook-02 run took
# over 100 s instead of 6 s. The wait policy changes scheduling only, not the numbers. It must
# be set before torch (and its OpenMP runtime) loads, so here; a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# vqpaper.diagnose(embeddings, indices, codebook, ...): the collapse report of any VQ model. Cheap to
# import (the module imports numpy, matplotlib and the metrics only when called).
from .diagnose import diagnose  # noqa: E402,F401
