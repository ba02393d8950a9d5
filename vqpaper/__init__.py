"""vqpaper: a reproducible companion to *Representation Collapsing Problems in Vector Quantization*.

Modules, one idea each: ``quantizers`` (EMA-VQ, SimVQ, K-means), ``models``, ``train``,
``data``, ``metrics`` (collapse metrics), ``plots``, ``sweeps`` (cached, resumable runs),
``claims`` (the paper's claims as checks), ``results``/``regression`` (recorded numbers),
``book`` (glue), ``config`` (profiles, parameter checks), ``cli``.
"""
__version__ = "0.1.0"

# vqpaper.diagnose(embeddings, indices, codebook, ...): the collapse report of any VQ model. Cheap to
# import (the module imports numpy, matplotlib and the metrics only when called).
from .diagnose import diagnose  # noqa: E402,F401
