"""vqpaper: a reproducible companion to *Representation Collapsing Problems in Vector Quantization*.

Modules, one idea each: ``quantizers`` (EMA-VQ, SimVQ, K-means), ``models``, ``train``,
``data``, ``metrics`` (collapse metrics), ``plots``, ``sweeps`` (cached, resumable runs),
``claims`` (the paper's claims as checks), ``results``/``regression`` (recorded numbers),
``book`` (glue), ``config`` (profiles, parameter checks), ``cli``.
"""
__version__ = "0.1.0"
