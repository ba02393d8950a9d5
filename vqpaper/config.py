"""Experiment configuration: one dataclass per kind of run, one per notebook, profiles as named presets.

A field's :class:`Kind` says what it accepts, and one checker (``Kind.check``) gives every message
the parameter, the bad value and what is allowed; run configs (:class:`SyntheticRun`,
:class:`CifarRun`) and notebook parameters are checked by the same kinds.

A notebook's ``parameters`` cell holds plain literals (``None`` = "take the profile's value"); its
next cell calls ``experiments.setup``, which merges the profile preset with the overrides
(:func:`notebook_config`) and rejects bad values *before any training starts*. The result is the
notebook's dataclass itself, read by attribute: no value has a second default anywhere else.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Optional

import torch

from .errors import ConfigError, check_number, check_positive_int
from .quantizers import EMA_UPDATES, KMEANS_INIT
from .recipes import BASELINE, parse_remedies
from .remedies import QUANTIZERS, fsq_levels  # ours and vector-quantize-pytorch's (notebook 06)
from .settings import settings

PROFILES = ("ci", "paper")
METHODS = ("scratch", "pretrained")
MAX_CODEBOOK = 2**20  # above ~1M tokens the EMA buffers alone outgrow a workstation


# --------------------------------------------------------------------------------------
# Kinds: what a field accepts, and the one checker
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """What a field accepts: "positive", "non-negative", "positive number", "non-negative number",
    "fraction" (a number in (0, 1)), "choice" (one of ``allowed``), "optional positive", "optional path",
    "flag", "device", or a list: "positive list", "seed list" (values distinct: each is one run of
    a pair) and "positive list (one per dim)" (values may repeat)."""

    name: str
    maximum: Optional[int] = None
    allowed: tuple = ()

    @property
    def is_list(self) -> bool:
        return self.name.endswith("list") or self.name.endswith("list (one per dim)")

    def check(self, param: str, value, example=None) -> Any:
        """The checked value, or a ConfigError naming ``param``, ``value`` and what is allowed.

        ``example``: a valid value to quote (a notebook parameter's preset); run configs give none.
        A notebook parameter given as text (``vqpaper run -p``, papermill ``-p``) is parsed first, by
        :func:`parse_value`, the one parser of parameter text.
        """
        if example is not None and isinstance(value, str):
            value = parse_value(value, param)
        if self.is_list:
            return self._check_list(param, value, example)
        if self.name == "flag":
            if not isinstance(value, bool):
                raise ConfigError(f"parameter {param!r} must be True or False, got {value!r}")
            return value
        if self.name == "device":
            return resolve_device(value)
        if self.name == "choice":
            if value not in self.allowed:
                raise ConfigError(f"{param} must be one of {list(self.allowed)}, got {value!r}")
            return value
        if self.name == "optional path":
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"parameter {param!r} must be a path (str) or None, got {value!r}")
            return value
        if self.name == "positive number":
            return check_number(param, value, above=0)
        if self.name == "non-negative number":
            return check_number(param, value, at_least=0)
        if self.name == "fraction":
            return check_number(param, value, above=0, below=1)
        if self.name == "optional positive" and value is None:
            return None
        if example is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"parameter {param!r} must be int like {example!r}, got {type(value).__name__} "
                              f"{value!r}")
        return check_positive_int(param, value, self.maximum, minimum=0 if self.name == "non-negative" else 1)

    def _check_list(self, param: str, value, example) -> list:
        if isinstance(value, str):
            value = parse_value(value, param)  # papermill -p passes "[16, 256]" as text
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"parameter {param!r} must be a list like {example!r}, got "
                              f"{type(value).__name__} {value!r} (vqpaper run: -p {param} \"{example!r}\"; "
                              f"papermill: -y \"{param}: {example!r}\")")
        if not value:
            raise ConfigError(f"parameter {param!r} must not be empty (e.g. {example!r})")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"parameter {param!r} must be a list of int, got element {v!r} in {value!r}")
            check_positive_int(f"{param} element", v, self.maximum, minimum=0 if self.name == "seed list" else 1)
        if self.name != "positive list (one per dim)":
            repeated = sorted({v for v in value if list(value).count(v) > 1})
            if repeated:
                # two identical runs would pair with themselves: zero spread, an invented verdict
                raise ConfigError(f"parameter {param!r} lists {repeated[0]!r} more than once in {list(value)!r}; "
                                  f"each value must appear once (two equal seeds, sizes or widths would be the "
                                  f"same runs counted twice)")
        return list(value)


POSITIVE, NONNEG = Kind("positive"), Kind("non-negative")
POSITIVE_NUMBER, NONNEG_NUMBER, FRACTION = Kind("positive number"), Kind("non-negative number"), Kind("fraction")
POSITIVE_LIST, SEED_LIST = Kind("positive list"), Kind("seed list")
PER_DIM_LIST = Kind("positive list (one per dim)")
CODEBOOK_SIZE, CODEBOOK_LIST = Kind("positive", MAX_CODEBOOK), Kind("positive list", MAX_CODEBOOK)
OPTIONAL_POSITIVE, OPTIONAL_PATH = Kind("optional positive"), Kind("optional path")
FLAG, DEVICE = Kind("flag"), Kind("device")


def choice(*allowed) -> Kind:
    return Kind("choice", allowed=tuple(allowed))


@dataclass(frozen=True)
class _RemedyList(Kind):
    """A list of remedy recipes (``recipes.parse_remedies``): ``['ema', 'pretrained+restart']``."""

    def check(self, param: str, value, example=None) -> Any:
        if isinstance(value, str):
            value = parse_value(value, param)  # papermill -p passes "['ema', 'fsq']" as text
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"parameter {param!r} must be a list like {example!r}, got {type(value).__name__} "
                              f"{value!r} (vqpaper run: -p {param} \"[ema, restart]\"; papermill: -y \"{param}: "
                              f"[ema, restart]\")")
        try:
            parse_remedies(list(value))
        except ConfigError as exc:
            raise ConfigError(f"parameter {param!r}: {exc}") from None
        return list(value)


REMEDY_LIST = _RemedyList("remedy list")


def parse_value(text: str, param: str = "value") -> Any:
    """The one parser of a parameter given as text (``vqpaper run -p NAME TEXT``, papermill ``-p``).

    A Python literal (``3``, ``0.5``, ``[0, 1, 2]``, ``True``, ``None``), a YAML/JSON list or
    mapping (``[ema, simvq]``), ``true``/``false``/``null``, or else the text itself (``cpu``, a
    path). Only plain values come back: numbers, strings, booleans, None, lists and dicts.
    """
    stripped = text.strip()
    words = {"true": True, "false": False, "null": None, "none": None}
    if stripped in words:
        return words[stripped]
    try:
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if stripped[:1] not in ("[", "{"):
            return text
        import yaml  # only for YAML-style lists such as [ema, simvq]

        try:
            value = yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            raise ConfigError(f"parameter {param!r}: cannot parse {text!r} ({exc}); write a literal such as "
                              "3, 0.5, [16, 256], True or a word such as cpu") from None

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise ConfigError(f"parameter {param!r}: {text!r} is a {type(v).__name__}; use numbers, strings, "
                          "booleans, None, lists or dicts")

    return plain(value)


def check_fields(obj) -> None:
    """Check every field of a dataclass instance that declares a kind (``metadata["kind"]``)."""
    for f in fields(obj):
        kind = f.metadata.get("kind")
        if kind is not None:
            kind.check(f.name, getattr(obj, f.name))


def check_codebook_memory(codebook_size: int, token_dim: int):
    """Refuse a codebook whose EMA buffers (codebook + sums, float32) would not fit in memory."""
    need = 3 * codebook_size * token_dim * 4
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 2**36
    if need > total / 4:
        raise ConfigError(f"codebook_size={codebook_size:,} x token_dim={token_dim} needs about "
                          f"{need / 2**30:.1f} GiB for the codebook alone, more than a quarter of this "
                          f"machine's {total / 2**30:.0f} GiB; choose a smaller codebook_size")


# --------------------------------------------------------------------------------------
# Runs: one dataclass per kind of run, every field typed by its kind
# --------------------------------------------------------------------------------------
def run_field(kind: Kind, default):
    """A run config field: its default and its kind (checked by ``validate``)."""
    return field(default=default, metadata={"kind": kind})


QUANTIZER, METHOD = choice(*QUANTIZERS), choice(*METHODS)
KMEANS, EMA_UPDATE = choice(*KMEANS_INIT), choice(*EMA_UPDATES)


@dataclass
class SyntheticRun:
    """One run on the 10-cluster synthetic data (paper §5.2 defaults)."""
    dim: int = run_field(POSITIVE, 2)
    token_dim: int = run_field(POSITIVE, 1)
    encoder_hidden: int = run_field(POSITIVE, 32)
    decoder_hidden: int = run_field(POSITIVE, 32)
    codebook_size: int = run_field(CODEBOOK_SIZE, 128)
    quantizer: str = run_field(QUANTIZER, "ema")
    method: str = run_field(METHOD, "scratch")
    epochs: int = run_field(POSITIVE, 200)               # scratch
    pretrain_epochs: int = run_field(POSITIVE, 100)      # pretrained: AE epochs ...
    finetune_epochs: int = run_field(POSITIVE, 100)      # ... then VQ epochs
    n_per_cluster: int = run_field(POSITIVE, 1000)
    n_clusters: int = run_field(POSITIVE, 10)
    cluster_std: float = run_field(POSITIVE_NUMBER, 0.5)
    data_seed: int = run_field(NONNEG, 0)
    seed: int = run_field(NONNEG, 0)
    batch_size: int = run_field(POSITIVE, 256)
    lr: float = run_field(POSITIVE_NUMBER, 1e-3)
    beta: float = run_field(NONNEG_NUMBER, 0.25)
    decay: float = run_field(FRACTION, 0.9)
    kmeans_init: str = run_field(KMEANS, "dataset")
    kmeans_iters: int = run_field(POSITIVE, 10)
    # eq. (5) as the paper writes it (an unused token stays where it is): this book reproduces the
    # paper; "laplace" is sonnet's smoothed update, which moves unused tokens to the origin
    ema_update: str = run_field(EMA_UPDATE, "eq5")
    device: str = run_field(DEVICE, "cpu")

    def validate(self):
        check_fields(self)
        check_codebook_memory(self.codebook_size, self.token_dim)
        if self.dim % self.token_dim:
            raise ConfigError(f"token_dim={self.token_dim} must divide dim={self.dim} "
                              f"(allowed: {[t for t in range(1, self.dim + 1) if self.dim % t == 0]})")
        return self


@dataclass
class CifarRun:
    """One CIFAR-10 run with the sonnet-style conv VQ-VAE (paper §5.2 defaults)."""
    codebook_size: int = run_field(CODEBOOK_SIZE, 512)
    token_dim: int = run_field(POSITIVE, 64)
    channels: int = run_field(POSITIVE, 128)
    residual_channels: int = run_field(POSITIVE, 64)
    encoder_channels: Optional[int] = run_field(OPTIONAL_POSITIVE, None)
    quantizer: str = run_field(QUANTIZER, "ema")
    method: str = run_field(METHOD, "scratch")
    epochs: int = run_field(POSITIVE, 300)
    pretrain_epochs: int = run_field(POSITIVE, 150)
    finetune_epochs: int = run_field(POSITIVE, 150)
    train_images: Optional[int] = run_field(OPTIONAL_POSITIVE, None)
    data_seed: int = run_field(NONNEG, 0)
    seed: int = run_field(NONNEG, 0)
    batch_size: int = run_field(POSITIVE, 128)
    lr: float = run_field(POSITIVE_NUMBER, 3e-4)
    beta: float = run_field(NONNEG_NUMBER, 0.25)
    decay: float = run_field(FRACTION, 0.99)
    kmeans_init: str = run_field(KMEANS, "dataset")
    kmeans_iters: int = run_field(POSITIVE, 10)
    kmeans_vectors: Optional[int] = run_field(OPTIONAL_POSITIVE, None)
    ema_update: str = run_field(EMA_UPDATE, "eq5")         # the paper's eq. (5), see SyntheticRun.ema_update
    device: str = run_field(DEVICE, "cpu")

    def validate(self):
        check_fields(self)
        check_codebook_memory(self.codebook_size, self.token_dim)
        return self


# --------------------------------------------------------------------------------------
# Device and threads
# --------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``. Asking for CUDA without one is an error.

    We chose an error over a silent fallback: a sweep the user meant for a GPU would otherwise
    run for hours on a CPU.
    """
    if not isinstance(device, str):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} was requested but no CUDA GPU is available "
                              f"(torch.cuda.is_available() is False); use device='auto' or 'cpu'")
        return device
    raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


#: Numerical precision of the encoder and decoder during training (``precision`` of a run; the
#: quantizer's distances and EMA statistics are float32 in every mode):
#: ``"float32"`` (the default on a CPU; on CUDA also without TF32, so a GPU run computes what the
#: CPU does), ``"tf32"`` (CUDA only, its default: TF32 matmuls and convolutions, ~7x the float32
#: peak of an H100), ``"bf16"`` (bfloat16 autocast).
PRECISIONS = ("float32", "tf32", "bf16")


def default_precision(device: Optional[str] = None) -> str:
    """``VQPAPER_PRECISION`` (set by ``vqpaper run/book --precision``), else ``"tf32"`` on a CUDA
    ``device`` and ``"float32"`` elsewhere."""
    env = settings().precision
    if env:
        return check_precision(env)
    return "tf32" if str(device or "cpu").startswith("cuda") else "float32"


def check_precision(precision, device: str = "cpu") -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r} "
                          f"(vqpaper run/book: --precision tf32; environment: VQPAPER_PRECISION=tf32)")
    if precision == "tf32" and not str(device).startswith("cuda"):
        raise ConfigError(f"precision='tf32' needs a CUDA device, got device={device!r}; "
                          f"use precision='float32' (or 'bf16') on {device!r}")
    return precision


#: Torch CPU threads per training run unless ``VQPAPER_THREADS`` says otherwise. Fixed, never
#: derived from the machine's load: a float sum reduced over 2 threads rounds differently from
#: one over 1, and training amplifies that into different numbers (issue 9 measured 2,388
#: moved keys between two `make test` runs whose thread counts followed the load average).
#: One thread per run, parallelism across runs and notebooks, was also the fastest on 2 cores.
DEFAULT_THREADS = 1


def set_threads(n: Optional[int] = None) -> int:
    """Set torch's CPU threads: ``n``, else env ``VQPAPER_THREADS``, else ``DEFAULT_THREADS``.

    The count is recorded with every figure (``results.environment``): it is part of what
    decides the numbers on a CPU.
    """
    if n is None:
        n = settings().threads or DEFAULT_THREADS
    check_positive_int("threads", n)
    torch.set_num_threads(n)
    return n


#: glibc's ``mallopt`` parameters (malloc.h) and the values :func:`reuse_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_MMAP_THRESHOLD = 32 << 20   # glibc's largest on 64-bit
HEAP_TRIM_THRESHOLD = 256 << 20
_heap_reused: Optional[bool] = None


def reuse_freed_memory() -> bool:
    """Let glibc's malloc serve allocations up to 32 MiB from memory freed earlier in the process
    (once per process; True where applied, False where the C library has no ``mallopt``).

    By default glibc maps a fresh block from the kernel for an allocation above its mmap
    threshold (128 KiB at first, then the size of the largest block freed) and unmaps it when
    freed; the kernel zeroes each page at its first touch. A group of synthetic runs allocates
    temporaries of many sizes (activations, gradients, distance tiles), so its steps keep
    faulting fresh pages: a group of 20 8-D runs of notebook 04 spent 0.8-1.0 s of system time
    in 15.4-16.3 s, and 0.2-0.5 s in 14.6-16.1 s with this (3 runs each; whole CIFAR-10 runs, whose
    steps repeat the same few sizes, do not change: 12.6-13.1 s either way). Here allocations
    below ``HEAP_MMAP_THRESHOLD`` come from the heap, and up to ``HEAP_TRIM_THRESHOLD`` of free
    memory at its top is kept for the next step. No number can change: torch writes every
    buffer it reads.
    """
    global _heap_reused
    if _heap_reused is None:
        import ctypes

        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc (macOS, Windows)
            _heap_reused = False
        else:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _heap_reused = (mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD) == 1
                            and mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD) == 1)
    return _heap_reused


# --------------------------------------------------------------------------------------
# Notebook parameters: one typed dataclass per notebook, `ci` and `paper` as two presets
# --------------------------------------------------------------------------------------
# A notebook's ``parameters`` cell names exactly the fields that have a kind (tests/test_config.py),
# each ``None`` by default, meaning "the profile's value". The other fields say how the notebook
# runs (profile, threads, clock, executor): set by ``notebook_config`` and ``experiments.setup``.


def param(kind: Kind, doc: str):
    """A notebook parameter: its kind (the checker) and what it means (shown by ``describe``)."""
    return field(metadata={"kind": kind, "doc": doc})


def _context(doc: str, default=None):
    return field(default=default, metadata={"context": doc})


@dataclass(frozen=True, kw_only=True)
class NotebookParams:
    """Shared by the notebook dataclasses: the run context, the parameters, cross-field checks."""

    NOTEBOOK: ClassVar[str] = ""

    device: str = param(DEVICE, "'auto', 'cpu' or 'cuda[:N]'")
    profile: str = _context("the profile the values come from", "")
    threads: Optional[int] = _context("torch CPU threads per run (config.set_threads)")
    started: Optional[float] = _context("time.time() when the notebook's work began")
    executor: Optional[str] = _context("where the runs execute: 'local' or 'ray' (executors.resolve_name)")

    @property
    def notebook(self) -> str:
        return self.NOTEBOOK

    @classmethod
    def parameter_names(cls) -> list[str]:
        """The notebook's parameters (its ``parameters`` cell), in declaration order."""
        return [f.name for f in fields(cls) if "kind" in f.metadata]

    def parameters(self) -> dict:
        """The parameters' values, with the profile they came from (what a figure records)."""
        return {**{name: getattr(self, name) for name in self.parameter_names()}, "profile": self.profile}

    def provenance(self, seeds=None) -> dict:
        """The keyword arguments of ``results.record`` that say what produced a figure."""
        return dict(notebook=self.notebook, params=self.parameters(), profile=self.profile,
                    seeds=self.seeds if seeds is None else seeds, started=self.started, device=self.device,
                    executor=self.executor)

    def validate(self):
        return self


SYNTHETIC_DOCS = dict(
    seeds="model seeds", n_per_cluster="points per cluster (10 clusters)",
    data_seed="seed of the synthetic data, kept apart from the model seeds")
CIFAR_DOCS = dict(
    token_dim="dimension of a token and of a latent vector", channels="width of the conv encoder and decoder",
    residual_channels="hidden channels of the residual blocks",
    train_images="use only this many training images (None: all)",
    kmeans_vectors="K-means initialisation on a random sample of this many latents (None: all)",
    lr="learning rate of Adam (amsgrad); the paper's is 3e-4",
    cifar10="an .npz or a torchvision folder (None: $VQPAPER_CIFAR10, then a download)")


def _check_dims(dims, token_dims):
    if len(dims) != len(token_dims):
        raise ConfigError(f"dims={dims} and token_dims={token_dims} must have the same length")
    for d, t in zip(dims, token_dims):
        if d % t:
            raise ConfigError(f"token_dims: token_dim={t} must divide dim={d}")


@dataclass(frozen=True, kw_only=True)
class SyntheticSweep(NotebookParams):
    """The synthetic data and budgets shared by notebooks 02, 05 and 06."""
    dims: list = param(POSITIVE_LIST, "data dimensions")
    token_dims: list = param(PER_DIM_LIST, "token dimension for each data dimension")
    seeds: list = param(SEED_LIST, SYNTHETIC_DOCS["seeds"])
    scratch_epochs: int = param(POSITIVE, "epochs of the VQ-VAEs trained from scratch")
    pretrain_epochs: int = param(POSITIVE, "autoencoder pretraining epochs ...")
    finetune_epochs: int = param(POSITIVE, "... then VQ fine-tuning epochs")
    n_per_cluster: int = param(POSITIVE, SYNTHETIC_DOCS["n_per_cluster"])
    data_seed: int = param(NONNEG, SYNTHETIC_DOCS["data_seed"])

    def validate(self):
        _check_dims(self.dims, self.token_dims)
        return super().validate()


@dataclass(frozen=True, kw_only=True)
class CifarSweep(NotebookParams):
    """The CIFAR-10 codebook sweep and budgets shared by notebooks 05 and 06."""
    codebook_sizes: list = param(CODEBOOK_LIST, "CIFAR-10 codebook sizes K")
    token_dim: int = param(POSITIVE, CIFAR_DOCS["token_dim"])
    channels: int = param(POSITIVE, CIFAR_DOCS["channels"])
    residual_channels: int = param(POSITIVE, CIFAR_DOCS["residual_channels"])
    cifar_scratch_epochs: int = param(POSITIVE, "CIFAR-10 epochs from scratch")
    cifar_pretrain_epochs: int = param(POSITIVE, "CIFAR-10 autoencoder pretraining ...")
    cifar_finetune_epochs: int = param(POSITIVE, "... then VQ fine-tuning")
    cifar_seeds: list = param(SEED_LIST, "model seeds of the CIFAR-10 runs")
    cifar_lr: float = param(POSITIVE_NUMBER, "CIFAR-10 " + CIFAR_DOCS["lr"])
    train_images: Optional[int] = param(OPTIONAL_POSITIVE, CIFAR_DOCS["train_images"])
    kmeans_vectors: Optional[int] = param(OPTIONAL_POSITIVE, CIFAR_DOCS["kmeans_vectors"])
    cifar10: Optional[str] = param(OPTIONAL_PATH, CIFAR_DOCS["cifar10"])

    def validate(self):
        for k in self.codebook_sizes:
            check_codebook_memory(k, self.token_dim)
        return super().validate()


@dataclass(frozen=True, kw_only=True)
class Preliminaries(NotebookParams):
    """01 preliminaries, Fig. 2: the encoder outputs the tokens are initialised from."""
    NOTEBOOK: ClassVar[str] = "01_preliminaries"
    dim: int = param(POSITIVE, "dimension of the synthetic data")
    token_dim: int = param(POSITIVE, "token dimension, must divide dim")
    seeds: list = param(SEED_LIST, SYNTHETIC_DOCS["seeds"])
    scratch_epochs: int = param(POSITIVE, "VQ epochs of the scratch runs after their initialisation")
    pretrain_epochs: int = param(POSITIVE, "autoencoder epochs before the trained encoder is read out")
    finetune_epochs: int = param(POSITIVE, "VQ epochs of the pretrained runs after their initialisation")
    n_per_cluster: int = param(POSITIVE, SYNTHETIC_DOCS["n_per_cluster"])
    data_seed: int = param(NONNEG, SYNTHETIC_DOCS["data_seed"])

    def validate(self):
        if self.dim % self.token_dim:
            raise ConfigError(f"token_dim={self.token_dim} must divide dim={self.dim}")
        return super().validate()


@dataclass(frozen=True, kw_only=True)
class TokensCollapseSynthetic(SyntheticSweep):
    """02 tokens collapse on synthetic data (§3.1.1, Fig. 3)."""
    NOTEBOOK: ClassVar[str] = "02_tokens_collapse_synthetic"
    laplace_ablation: bool = param(FLAG, "also train every run with the Laplace-smoothed EMA update")


@dataclass(frozen=True, kw_only=True)
class TokensCollapseCifar(NotebookParams):
    """03 tokens collapse on CIFAR-10, the codebook sweep (§3.1.2, Fig. 4)."""
    NOTEBOOK: ClassVar[str] = "03_tokens_collapse_cifar10"
    codebook_sizes: list = param(CODEBOOK_LIST, "codebook sizes K to sweep")
    token_dim: int = param(POSITIVE, CIFAR_DOCS["token_dim"])
    channels: int = param(POSITIVE, CIFAR_DOCS["channels"])
    residual_channels: int = param(POSITIVE, CIFAR_DOCS["residual_channels"])
    pretrain_epochs: int = param(POSITIVE, "autoencoder pretraining epochs ...")
    finetune_epochs: int = param(POSITIVE, "... then VQ fine-tuning epochs")
    scratch_epochs: int = param(POSITIVE, "epochs of the VQ-VAE trained from scratch")
    train_images: Optional[int] = param(OPTIONAL_POSITIVE, CIFAR_DOCS["train_images"])
    kmeans_vectors: Optional[int] = param(OPTIONAL_POSITIVE, CIFAR_DOCS["kmeans_vectors"])
    lr: float = param(POSITIVE_NUMBER, CIFAR_DOCS["lr"])
    seeds: list = param(SEED_LIST, "model seeds")
    cifar10: Optional[str] = param(OPTIONAL_PATH, CIFAR_DOCS["cifar10"])

    def validate(self):
        for k in self.codebook_sizes:
            check_codebook_memory(k, self.token_dim)
        return super().validate()


@dataclass(frozen=True, kw_only=True)
class EmbeddingsCollapse(NotebookParams):
    """04 embeddings collapse (§3.2, Figs. 5, 6)."""
    NOTEBOOK: ClassVar[str] = "04_embeddings_collapse"
    dims: list = param(POSITIVE_LIST, "data dimensions")
    token_dims: list = param(PER_DIM_LIST, "token dimension for each data dimension")
    encoder_hiddens: list = param(POSITIVE_LIST, "encoder widths of the VQ-VAEs from scratch (the paper's set-up)")
    pretrained_hiddens: list = param(POSITIVE_LIST, "encoder widths of the both-pretrained variant")
    seeds: list = param(SEED_LIST, SYNTHETIC_DOCS["seeds"])
    epochs: int = param(POSITIVE, "synthetic epochs (pretrained: half AE, half VQ)")
    n_per_cluster: int = param(POSITIVE, SYNTHETIC_DOCS["n_per_cluster"])
    data_seed: int = param(NONNEG, SYNTHETIC_DOCS["data_seed"])
    encoder_channels: list = param(POSITIVE_LIST, "CIFAR-10 encoder widths, widest first")
    cifar_channels: int = param(POSITIVE, "CIFAR-10 decoder width")
    cifar_residual_channels: int = param(POSITIVE, CIFAR_DOCS["residual_channels"])
    cifar_epochs: int = param(POSITIVE, "CIFAR-10 epochs, VQ-VAE from scratch")
    cifar_codebook_size: int = param(CODEBOOK_SIZE, "CIFAR-10 codebook size")
    cifar_token_dim: int = param(POSITIVE, "CIFAR-10 token dimension")
    cifar_kmeans_vectors: Optional[int] = param(OPTIONAL_POSITIVE, CIFAR_DOCS["kmeans_vectors"])
    cifar_train_images: Optional[int] = param(OPTIONAL_POSITIVE, CIFAR_DOCS["train_images"])
    cifar_lr: float = param(POSITIVE_NUMBER, "CIFAR-10 " + CIFAR_DOCS["lr"])
    cifar_seeds: list = param(SEED_LIST, "model seeds of the CIFAR-10 runs")
    cifar10: Optional[str] = param(OPTIONAL_PATH, CIFAR_DOCS["cifar10"])

    def validate(self):
        _check_dims(self.dims, self.token_dims)
        check_codebook_memory(self.cifar_codebook_size, self.cifar_token_dim)
        return super().validate()


@dataclass(frozen=True, kw_only=True)
class SimVQComparison(CifarSweep, SyntheticSweep):
    """05 SimVQ against EMA-VQ and pretraining."""
    NOTEBOOK: ClassVar[str] = "05_simvq_comparison"
    encoder_hiddens: list = param(POSITIVE_LIST, "encoder widths for the embeddings-collapse question")


@dataclass(frozen=True, kw_only=True)
class Remedies(CifarSweep, SyntheticSweep):
    """06 remedies beyond the paper, on both collapses (vqpaper.recipes)."""
    NOTEBOOK: ClassVar[str] = "06_remedies"
    remedies: list = param(REMEDY_LIST, "recipes: parts of recipes.PARTS joined by '+' (e.g. 'pretrained+restart'); "
                                        "'ema' (EMA-VQ from scratch) is the baseline and must be one of them")
    narrow_hidden: int = param(POSITIVE, "encoder width of the embeddings-collapse runs (the wide one is 32)")
    narrow_dims: list = param(POSITIVE_LIST, "data dimensions of the embeddings-collapse runs (among dims)")
    narrow_epochs: int = param(POSITIVE, "epochs of the embeddings-collapse runs (pretrained: half AE, half VQ)")
    narrow_n_per_cluster: int = param(POSITIVE, "points per cluster of the embeddings-collapse runs")
    cifar: bool = param(FLAG, "also every recipe on CIFAR-10 (off at ci: 30 CIFAR-10 runs would not fit its "
                              "budget; each remedy is tested on CIFAR-sized latents by tests/test_remedies.py)")

    def validate(self):
        recipes = parse_remedies(self.remedies)
        if BASELINE not in self.remedies:
            raise ConfigError(f"parameter 'remedies' must include {BASELINE!r} (EMA-VQ from scratch, the baseline "
                              f"every recipe is compared with), got {self.remedies!r}")
        missing = [d for d in self.narrow_dims if d not in self.dims]
        if missing:
            raise ConfigError(f"parameter 'narrow_dims': {missing} not among dims={self.dims}; the narrow encoder "
                              f"runs on dimensions the wide one ran on")
        if any(r.quantizer == "fsq" for r in recipes):
            for k in self.codebook_sizes + [SyntheticRun.codebook_size]:
                try:
                    fsq_levels(k)
                except ConfigError:
                    raise ConfigError(f"parameter 'codebook_sizes': {k} is not a power of two >= 4, which the "
                                      f"'fsq' recipe needs (its levels multiply to K); e.g. [256, 1024]") from None
        return super().validate()


SYN = dict(n_per_cluster=1000, data_seed=0, device="auto")


def _profiles(ci: NotebookParams, paper: NotebookParams) -> dict[str, NotebookParams]:
    return {"ci": replace(ci, profile="ci"), "paper": replace(paper, profile="paper")}


#: notebook -> {profile: preset}. ``ci``: same code path as ``paper``, smaller numbers (SPEC §4).
#: The ci profile's CIFAR-10 model and budget, shared by notebooks 03-05 so that their EMA-VQ runs are
#: the same runs (one cache entry each). What ci reduces against the paper (book/reproduce.md says it
#: too): 1,024 of the subset's training images, a conv VQ-VAE of width 16 (residual 8) and tokens of
#: 16 dimensions, 40 epochs (32 autoencoder + 8 VQ when pretrained, as long as from scratch: the
#: paper's equal budgets) at learning rate 1e-3 instead of 300 at 3e-4, and K-means on 16,384
#: latents (4 per token up to K = 4,096). Measured on this machine kind (2 cores, one thread per
#: run): at the paper's 3e-4 the runs' test MSE still fell 15-20% over the last quarter of 16
#: epochs and the effects were still moving; at 1e-3 they settle (claims.settled). The autoencoder's
#: loss flattens (claims' loss rule) after about 32 epochs (8: 25-46% of its fall in the last
#: quarter; 16: 19%; 24: 12%; 32: 6%, seed 0); it is pretrained once per seed for every codebook size
#: (sweeps.PretrainStore). Three seeds: every CIFAR-10 check rests on three pairs.
CI_CIFAR = dict(token_dim=16, channels=16, residual_channels=8, train_images=1024, kmeans_vectors=16384)
CI_CIFAR_EPOCHS = dict(scratch=40, pretrain=32, finetune=8)
CI_CIFAR_LR = 1e-3
CI_CIFAR_SEEDS = [0, 1, 2]

PRESETS: dict[str, dict[str, NotebookParams]] = {
    # Fig. 2 needs only the encoder outputs the tokens are initialised from (before any VQ
    # step), so the VQ training after it is one epoch; pretraining as in notebook 02. 40 seeds,
    # the seed being the unit of Fig. 2's checks: at 10 the sameness check (trained peaks = input
    # peaks) stayed undecided, its power analysis asking for 120 (then 40-44 at 20 seeds); 40
    # seeds decide it (pilot: trained minus input -0.20 [-0.37, -0.03], inside ±0.5). Longer
    # pretraining did not move it (20 and 40 epochs at 20 seeds: -0.25 both). The 80 runs train
    # in groups of at most 32 (train.MAX_GROUP) in about 50 s; Fig. 2 draws the first 4 seeds (FIG2_SEEDS_SHOWN).
    Preliminaries.NOTEBOOK: _profiles(
        ci=Preliminaries(dim=2, token_dim=1, seeds=list(range(40)), scratch_epochs=1, pretrain_epochs=10,
                         finetune_epochs=1, **SYN),
        paper=Preliminaries(dim=2, token_dim=1, seeds=list(range(40)), scratch_epochs=1, pretrain_epochs=100,
                            finetune_epochs=1, **SYN)),
    # 30 = 15 + 15 epochs, 6 seeds: with 3 seeds the worst-cluster and 8-D spread checks needed 4-6
    # to decide (claims.power: n for 80%); with 6 every paper check of this notebook is decided. The
    # 72 runs train in groups of 12 (eq. (5) and Laplace together, vqpaper.train.groups_of).
    TokensCollapseSynthetic.NOTEBOOK: _profiles(
        ci=TokensCollapseSynthetic(dims=[2, 3, 8], token_dims=[1, 1, 4], seeds=list(range(6)), scratch_epochs=30,
                                   pretrain_epochs=15, finetune_epochs=15, laplace_ablation=True, **SYN),
        paper=TokensCollapseSynthetic(dims=[2, 3, 8], token_dims=[1, 1, 4], seeds=list(range(6)),
                                      scratch_epochs=200, pretrain_epochs=100, finetune_epochs=100,
                                      laplace_ablation=True, **SYN)),
    # ci: the paper's smallest K (16), 256 and 2^12, where the paper's collapse starts: three sizes
    # for the trends over K. The stagnation claim needs two sizes from 2^12: with K = 8,192 in
    # place of 256 (3 seeds) it stayed undecided (effect +0.02, 95% CI [-0.26, 0.30]; about 124
    # seeds for 80% power) and took 170 s of the book's critical path, so ci leaves it to the paper
    # profile and says so. The two MSE checks (smallest and largest K) need a longer budget:
    # pilots on a GPU (2026-12-04) at 8 seeds and these 40 (32 + 8) epochs left the smallest-K one
    # still moving; at 50 (40 + 10) epochs and 6 seeds every check but stagnation was decided
    # (smallest K: pretraining better, the other way, ×0.86 [0.80, 0.93]; largest K: pretraining
    # better ×1.36 [1.23, 1.49]; n for 80% power 3-5). On this machine kind that is 2.5 times
    # 03's ~290 s, beyond the book's budget, so ci keeps 3 seeds. paper: every other power of
    # two of the paper's sweep, three seeds.
    TokensCollapseCifar.NOTEBOOK: _profiles(
        ci=TokensCollapseCifar(codebook_sizes=[16, 256, 4096], **CI_CIFAR,
                               pretrain_epochs=CI_CIFAR_EPOCHS["pretrain"], finetune_epochs=CI_CIFAR_EPOCHS["finetune"],
                               scratch_epochs=CI_CIFAR_EPOCHS["scratch"], lr=CI_CIFAR_LR, seeds=CI_CIFAR_SEEDS,
                               cifar10=None, device="auto"),
        paper=TokensCollapseCifar(codebook_sizes=[2**i for i in range(4, 17, 2)], token_dim=32, channels=128,
                                  residual_channels=64, pretrain_epochs=150, finetune_epochs=150,
                                  scratch_epochs=300, train_images=None, kmeans_vectors=None, lr=3e-4,
                                  seeds=[0, 1, 2], cifar10=None, device="auto")),
    # encoder_hiddens: scratch VQ-VAEs as in the paper; pretrained_hiddens: the cleaner variant
    # (both pretrained). ci: 2-D and 8-D with 500 points per cluster, 90 epochs and 20 seeds:
    # the narrow encoder's collapse differs much from seed to seed (one 2-D seed in three keeps
    # its clusters apart). At 10 seeds and 60 epochs the tokens-outside check was still moving
    # and asked for 12 seeds; pilots of 20 and 30 seeds at 60, 90 and 120 epochs decided it at
    # 90 and 120 (n for 80%: 14-23). The precision and merged-peaks checks asked for 41-343 and
    # 51-94 seeds in every pilot: ci leaves them undecided and its power table says so. Batched
    # in groups of 20, the 200 synthetic runs take about 2 min. CIFAR-10: the ci model of 03 at
    # K = 256, its encoder at 16 channels and at 2, 16 epochs and 6 seeds (at 3 seeds the power
    # analysis asked for 6; the effect had settled at 16 epochs). paper: 40 seeds, from a pilot of
    # this preset's 2-D and 3-D runs at 80 seeds (on CPU, 2026-12-04): precision and merged
    # peaks were decided in both (no effect on precision, inside ±0.05; more peaks with the
    # narrow encoder, -0.70 and -1.05), the power analysis asking for at most 22 seeds (80%) and
    # 35 (95%); 2-D tokens outside was still moving at 200 epochs (228 seeds for 80%). On a GPU
    # the 40 seeds of a shape train as one group (train.MAX_GROUP), so they cost little more time
    # than 10.
    EmbeddingsCollapse.NOTEBOOK: _profiles(
        ci=EmbeddingsCollapse(dims=[2, 8], token_dims=[1, 4], encoder_hiddens=[4, 8, 32], pretrained_hiddens=[4, 32],
                              seeds=list(range(20)), epochs=90, n_per_cluster=500, data_seed=0,
                              encoder_channels=[16, 2], cifar_channels=CI_CIFAR["channels"],
                              cifar_residual_channels=CI_CIFAR["residual_channels"],
                              cifar_epochs=16, cifar_codebook_size=256,
                              cifar_token_dim=CI_CIFAR["token_dim"], cifar_kmeans_vectors=CI_CIFAR["kmeans_vectors"],
                              cifar_train_images=CI_CIFAR["train_images"], cifar_lr=CI_CIFAR_LR,
                              cifar_seeds=list(range(6)), cifar10=None, device="auto"),
        paper=EmbeddingsCollapse(dims=[2, 3, 8], token_dims=[1, 1, 4], encoder_hiddens=[4, 8, 32],
                                 pretrained_hiddens=[4, 32], seeds=list(range(40)), epochs=200,
                                 encoder_channels=[64, 16, 4, 2], cifar_channels=128,
                                 cifar_residual_channels=64, cifar_epochs=300, cifar_codebook_size=512,
                                 cifar_token_dim=64, cifar_kmeans_vectors=None, cifar_train_images=None,
                                 cifar_lr=3e-4, cifar_seeds=[0, 1, 2], cifar10=None, **SYN)),
    # ci: the synthetic runs of 02 (EMA-VQ comes from its cache) and 03's CIFAR-10 model at two of
    # its sizes (its EMA-VQ runs too); SimVQ adds 6 CIFAR-10 runs.
    SimVQComparison.NOTEBOOK: _profiles(
        ci=SimVQComparison(dims=[2, 3, 8], token_dims=[1, 1, 4], seeds=list(range(6)), scratch_epochs=30,
                           pretrain_epochs=15, finetune_epochs=15, encoder_hiddens=[4, 32],
                           codebook_sizes=[16, 4096], **CI_CIFAR, cifar_pretrain_epochs=CI_CIFAR_EPOCHS["pretrain"],
                           cifar_finetune_epochs=CI_CIFAR_EPOCHS["finetune"],
                           cifar_scratch_epochs=CI_CIFAR_EPOCHS["scratch"], cifar_lr=CI_CIFAR_LR,
                           cifar_seeds=CI_CIFAR_SEEDS, cifar10=None, **SYN),
        paper=SimVQComparison(dims=[2, 3, 8], token_dims=[1, 1, 4], seeds=list(range(6)), scratch_epochs=200,
                              pretrain_epochs=100, finetune_epochs=100, encoder_hiddens=[4, 32],
                              codebook_sizes=[2**i for i in range(4, 17, 4)], token_dim=32, channels=128,
                              residual_channels=64, cifar_pretrain_epochs=150, cifar_finetune_epochs=150,
                              cifar_scratch_epochs=300, cifar_lr=3e-4, cifar_seeds=[0, 1, 2], train_images=None,
                              kmeans_vectors=None, cifar10=None, **SYN)),
    # ci: every recipe on 2-D and 8-D (token dims 1 and 4: the rotation trick and l2 codes need
    # more than one coordinate), 500 points per cluster and 16 epochs, the narrow encoder in 2-D
    # at 40 epochs of 300 points per cluster; no CIFAR-10 (cifar=False: 10 recipes x 3 seeds would
    # not fit the ci budget; the paper profile runs them, and tests/test_remedies.py checks that
    # each remedy acts on CIFAR-sized latents).
    Remedies.NOTEBOOK: _profiles(
        ci=Remedies(remedies=["ema", "pretrained", "simvq", "restart", "batch-kmeans", "l2", "rotation", "fsq",
                              "pretrained+restart", "lib"], dims=[2, 8], token_dims=[1, 4], seeds=[0, 1, 2],
                    scratch_epochs=16, pretrain_epochs=8, finetune_epochs=8, n_per_cluster=500, data_seed=0,
                    narrow_hidden=4, narrow_dims=[2], narrow_epochs=40, narrow_n_per_cluster=300, cifar=False,
                    codebook_sizes=[256], **CI_CIFAR, cifar_scratch_epochs=CI_CIFAR_EPOCHS["scratch"],
                    cifar_pretrain_epochs=CI_CIFAR_EPOCHS["pretrain"], cifar_finetune_epochs=CI_CIFAR_EPOCHS["finetune"],
                    cifar_lr=CI_CIFAR_LR, cifar_seeds=CI_CIFAR_SEEDS, cifar10=None, device="auto"),
        # paper: the synthetic runs at 02-04's budget; CIFAR-10 at two codebook sizes (the small and the
        # large end of 03's sweep, where the collapse differs most) and half of 03's epochs (150 = 75 + 75),
        # so that the whole profile fits 2 h on one H100 at TF32 (vqpaper plan)
        paper=Remedies(remedies=["ema", "pretrained", "simvq", "restart", "batch-kmeans", "l2", "rotation", "fsq",
                                 "pretrained+restart", "restart+batch-kmeans", "lib"], dims=[2, 3, 8],
                       token_dims=[1, 1, 4], seeds=[0, 1, 2, 3, 4], scratch_epochs=200, pretrain_epochs=100,
                       finetune_epochs=100, narrow_hidden=4, narrow_dims=[2, 3, 8], narrow_epochs=200,
                       narrow_n_per_cluster=1000, cifar=True, codebook_sizes=[256, 4096], token_dim=32, channels=128,
                       residual_channels=64, cifar_scratch_epochs=150, cifar_pretrain_epochs=75,
                       cifar_finetune_epochs=75, cifar_lr=3e-4, cifar_seeds=[0, 1, 2], train_images=None,
                       kmeans_vectors=None, cifar10=None, **SYN)),
}


def _notebook_class(notebook: str) -> type:
    if notebook not in PRESETS:
        raise ConfigError(f"unknown notebook {notebook!r}; known: {sorted(PRESETS)}")
    return type(PRESETS[notebook]["ci"])


def describe(notebook: str) -> list[dict]:
    """Each parameter of ``notebook``: name, what it accepts, what it means, the ci and paper values."""
    presets = PRESETS[notebook]
    cls = _notebook_class(notebook)
    return [{"parameter": f.name, "accepts": f.metadata["kind"].name, "meaning": f.metadata["doc"],
             **{p: getattr(preset, f.name) for p, preset in presets.items()}}
            for f in fields(cls) if "kind" in f.metadata]


def notebook_config(notebook: str, profile: str = "ci", **overrides) -> NotebookParams:
    """The profile preset of ``notebook`` with the non-None ``overrides``, every value checked."""
    cls = _notebook_class(notebook)
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; allowed: {list(PROFILES)}")
    preset = PRESETS[notebook][profile]
    kinds = {f.name: f.metadata["kind"] for f in fields(cls) if "kind" in f.metadata}
    unknown = sorted(set(overrides) - set(kinds))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} for {notebook}; allowed: {sorted(kinds)}")
    checked = {name: kinds[name].check(name, value, getattr(preset, name))
               for name, value in overrides.items() if value is not None}
    params = replace(preset, **checked).validate()
    return replace(params, device=resolve_device(params.device))
