"""The two VQ-VAEs of the paper (§5.2), an MLP for the synthetic data and a conv net for CIFAR-10,
each for a *group* of M models of one shape trained as one (``seeds``, one per model).

Every weight has a leading model axis, ``[M, ...]``: model m's weights are slice m, drawn as
``torch.nn.Linear`` / ``Conv2d`` / ``ConvTranspose2d`` draw theirs after ``torch.manual_seed(seeds[m])``,
layer by layer in the order the network is built (a run alone starts from the weights the
single-model networks drew). Inputs and outputs carry the model axis too: ``x`` [M, B, ...],
``recon`` [M, B, ...], latents ``z`` [M, B, ..., token_dim], ``indices`` [M, B, ...], ``vq_loss`` [M].
The models share no weight, so the gradient of the summed losses reaches each model as that of
its own loss, and an elementwise optimiser (Adam) updates each as if it trained alone.

Both expose ``encode`` (latents with ``token_dim`` as the last axis), ``decode`` and a
``forward`` returning :class:`ModelOutput`. With ``quantizer=None`` the model is a plain
autoencoder: that is the pretraining stage of the paper's remedy for tokens collapse
("pretrain without VQ, then fine-tune with VQ"); :meth:`attach_quantizer` then turns the
pretrained autoencoder into the VQ-VAE with the same weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, check_positive_int


@dataclass
class ModelOutput:
    recon: torch.Tensor
    z: torch.Tensor                 # embeddings (encoder outputs), [M, B, ..., token_dim]
    quantized: torch.Tensor         # tokens chosen for z (straight-through), same shape
    indices: Optional[torch.Tensor]  # [M, B, ...], None without a quantizer
    vq_loss: torch.Tensor           # [M]


# --------------------------------------------------------------------------------------
# Layers of M models
# --------------------------------------------------------------------------------------
class _GroupLayer(nn.Module):
    """A layer of M models: ``weight`` and ``bias`` with a leading model axis."""

    def _draw(self, m: int, weight_shape: Sequence[int], fan_in: int, generator: torch.Generator):
        """Model m's weight (in torch's layout ``weight_shape``) and bias, as torch's layers draw them:
        ``kaiming_uniform_(a=sqrt(5))``, then the bias uniform in +-1/sqrt(fan_in)."""
        w = torch.empty(*weight_shape)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(fan_in)
        b = torch.empty(self.bias.shape[-1]).uniform_(-bound, bound, generator=generator)
        return w, b


class GroupLinear(_GroupLayer):
    """M linear maps ``in -> out``: ``weight`` [M, in, out], ``bias`` [M, 1, out]; ``x`` [M, B, in]."""

    def __init__(self, models: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(models, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(models, 1, out_features))

    @torch.no_grad()
    def reset(self, m: int, generator: torch.Generator):
        n_in, n_out = self.weight.shape[1:]
        w, b = self._draw(m, (n_out, n_in), n_in, generator)  # nn.Linear's weight is [out, in]
        self.weight[m].copy_(w.t())
        self.bias[m, 0].copy_(b)

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight)


class GroupConv2d(_GroupLayer):
    """M convolutions as one grouped convolution: ``weight`` [M, out, in, k, k], ``bias`` [M, out];
    activations [B, M * channels, H, W], model m's channels in block m."""

    transposed = False

    def __init__(self, models: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0):
        super().__init__()
        shape = (in_channels, out_channels) if self.transposed else (out_channels, in_channels)
        self.weight = nn.Parameter(torch.empty(models, *shape, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(models, out_channels))
        self.stride, self.padding, self.models = stride, padding, models

    @torch.no_grad()
    def reset(self, m: int, generator: torch.Generator):
        shape = self.weight.shape[1:]
        # torch's fan-in is weight.size(1) x kernel: in_channels for Conv2d, out_channels for ConvTranspose2d
        w, b = self._draw(m, shape, shape[1] * shape[2] * shape[3], generator)
        self.weight[m].copy_(w)
        self.bias[m].copy_(b)

    def forward(self, x):
        weight = self.weight.reshape(-1, *self.weight.shape[2:])
        conv = F.conv_transpose2d if self.transposed else F.conv2d
        return conv(x, weight, self.bias.reshape(-1), stride=self.stride, padding=self.padding, groups=self.models)


class GroupConvTranspose2d(GroupConv2d):
    """M transposed convolutions: ``weight`` [M, in, out, k, k] (torch's layout per model)."""

    transposed = True


def _init_from_seeds(module: nn.Module, seeds: Sequence[int]):
    """Draw model m's weights from ``seeds[m]``: every group layer in the order it was built,
    as the single-model layers were drawn from torch's generator after ``manual_seed``."""
    layers = [layer for layer in module.modules() if isinstance(layer, _GroupLayer)]
    for m, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(int(seed))
        for layer in layers:
            layer.reset(m, generator)


# --------------------------------------------------------------------------------------
# The VQ-VAEs
# --------------------------------------------------------------------------------------
class _VQVAE(nn.Module):
    token_dim: int
    models: int

    def __init__(self, seeds: Sequence[int]):
        super().__init__()
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ConfigError("seeds: a group needs at least one model seed, got []")
        self.models = len(self.seeds)
        self.quantizer: Optional[nn.Module] = None

    def attach_quantizer(self, quantizer: Optional[nn.Module]):
        if quantizer is not None:
            if quantizer.token_dim != self.token_dim:
                raise ConfigError(f"quantizer token_dim={quantizer.token_dim} does not match the model's "
                                  f"token_dim={self.token_dim}")
            if not getattr(quantizer, "grouped", False) or quantizer.models != self.models:
                raise ConfigError(f"a group of {self.models} models needs a group of {self.models} quantizers "
                                  f"(make_quantizer(..., seed=[one seed per model]) or quantizers.QuantizerLoop), "
                                  f"got {type(quantizer).__name__} with "
                                  f"{getattr(quantizer, 'models', 1) if getattr(quantizer, 'grouped', False) else 'no'}"
                                  f" model axis")
        self.quantizer = quantizer
        return self

    def _check_input(self, x: torch.Tensor, tail: tuple, what: str):
        if x.dim() != 2 + len(tail) or x.shape[0] != self.models or tuple(x.shape[2:]) != tail:
            raise ConfigError(f"{type(self).__name__} of {self.models} model(s) expects {what} "
                              f"[{self.models}, B, {', '.join(map(str, tail))}], got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> ModelOutput:
        z = self.encode(x)
        if self.quantizer is None:
            return ModelOutput(self.decode(z), z, z, None, z.new_zeros(self.models))
        quantized, indices, loss = self.quantizer(z)
        return ModelOutput(self.decode(quantized), z, quantized, indices, loss)


class MLPVQVAE(_VQVAE):
    """Synthetic-data VQ-VAE: encoder d -> H -> H -> d, decoder d -> 32 -> 32 -> d (ReLU).

    The encoder's d-dimensional output is split into ``d / token_dim`` latent vectors, each
    quantized against one shared codebook (2-D and 3-D data: token_dim 1, so every coordinate
    is a 1-D embedding; 8-D: token_dim 4, two latent vectors per point).
    ``encoder_hidden`` is the capacity knob of the embeddings-collapse experiment (§3.2).
    Every layer is a batched matmul over the M models (``baddbmm``).
    """

    def __init__(self, dim: int, token_dim: int = 1, encoder_hidden: int = 32, decoder_hidden: int = 32,
                 quantizer: Optional[nn.Module] = None, seeds: Sequence[int] = (0,)):
        super().__init__(seeds)
        for name, v in [("dim", dim), ("token_dim", token_dim), ("encoder_hidden", encoder_hidden),
                        ("decoder_hidden", decoder_hidden)]:
            check_positive_int(name, v)
        if dim % token_dim:
            raise ConfigError(f"token_dim={token_dim} must divide the data dimension dim={dim} "
                              f"(allowed: {[t for t in range(1, dim + 1) if dim % t == 0]})")
        self.dim, self.token_dim, self.n_latents = dim, token_dim, dim // token_dim
        m = self.models
        self.encoder = nn.ModuleList([GroupLinear(m, dim, encoder_hidden), GroupLinear(m, encoder_hidden, encoder_hidden),
                                      GroupLinear(m, encoder_hidden, dim)])
        self.decoder = nn.ModuleList([GroupLinear(m, dim, decoder_hidden), GroupLinear(m, decoder_hidden, decoder_hidden),
                                      GroupLinear(m, decoder_hidden, dim)])
        _init_from_seeds(self, self.seeds)
        self.attach_quantizer(quantizer)

    @staticmethod
    def _mlp(layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(layers):
            h = layer(h)
            if i < len(layers) - 1:
                h = torch.relu_(h)  # in place: baddbmm's backward needs its inputs, not its output
        return h

    def encode(self, x):
        self._check_input(x, (self.dim,), "data")
        return self._mlp(self.encoder, x).view(self.models, x.shape[1], self.n_latents, self.token_dim)

    def decode(self, zq):
        return self._mlp(self.decoder, zq.reshape(self.models, zq.shape[1], self.dim))


class _Residual(nn.Module):
    def __init__(self, models, channels, hidden):
        super().__init__()
        self.conv3 = GroupConv2d(models, channels, hidden, 3, padding=1)
        self.conv1 = GroupConv2d(models, hidden, channels, 1)

    def forward(self, x):
        return x + self.conv1(torch.relu(self.conv3(torch.relu(x))))


def _residual_stack(models, channels, hidden, n):
    return nn.Sequential(*[_Residual(models, channels, hidden) for _ in range(n)], nn.ReLU())


class ConvVQVAE(_VQVAE):
    """CIFAR-10 VQ-VAE in the style of DeepMind sonnet's ``vqvae_example``.

    Encoder: two stride-2 4x4 convs (32x32 -> 8x8), a 3x3 conv, ``n_residual`` residual
    blocks, a 1x1 conv to ``token_dim``. Decoder mirrors it with ``channels`` width.
    ``encoder_channels`` (default ``channels``) sets the encoder's width alone: the paper's
    embeddings-collapse sweep on CIFAR-10 shrinks it from 64 to 2 with the decoder fixed.
    Images ``x`` [M, B, 3, 32, 32]; latents are returned channel-last, [M, B, 8, 8, token_dim].
    The M models run as grouped convolutions (``groups=M``; one model: plain convolutions).
    """

    def __init__(self, token_dim: int = 64, channels: int = 128, residual_channels: int = 64,
                 encoder_channels: Optional[int] = None, n_residual: int = 2,
                 quantizer: Optional[nn.Module] = None, seeds: Sequence[int] = (0,)):
        super().__init__(seeds)
        encoder_channels = channels if encoder_channels is None else encoder_channels
        for name, v in [("token_dim", token_dim), ("channels", channels), ("residual_channels", residual_channels),
                        ("encoder_channels", encoder_channels), ("n_residual", n_residual)]:
            check_positive_int(name, v)
        self.token_dim = token_dim
        m, e, eh = self.models, encoder_channels, max(1, encoder_channels // 2)
        enc_res = max(1, min(residual_channels, e))
        self.encoder = nn.Sequential(
            GroupConv2d(m, 3, eh, 4, stride=2, padding=1), nn.ReLU(),
            GroupConv2d(m, eh, e, 4, stride=2, padding=1), nn.ReLU(),
            GroupConv2d(m, e, e, 3, padding=1),
            _residual_stack(m, e, enc_res, n_residual),
            GroupConv2d(m, e, token_dim, 1),
        )
        c = channels
        self.decoder = nn.Sequential(
            GroupConv2d(m, token_dim, c, 3, padding=1),
            _residual_stack(m, c, residual_channels, n_residual),
            GroupConvTranspose2d(m, c, c // 2, 4, stride=2, padding=1), nn.ReLU(),
            GroupConvTranspose2d(m, c // 2, 3, 4, stride=2, padding=1),
        )
        _init_from_seeds(self, self.seeds)
        self.attach_quantizer(quantizer)

    def encode(self, x):
        self._check_input(x, (3, 32, 32), "images")
        m, b = x.shape[:2]
        h = self.encoder(x.transpose(0, 1).reshape(b, m * 3, 32, 32))        # [B, M * D, 8, 8]
        return h.view(b, m, self.token_dim, *h.shape[2:]).permute(1, 0, 3, 4, 2)  # [M, B, 8, 8, D]

    def decode(self, zq):
        m, b, height, width, d = zq.shape
        out = self.decoder(zq.permute(1, 0, 4, 2, 3).reshape(b, m * d, height, width))  # [B, M * 3, 32, 32]
        return out.view(b, m, 3, *out.shape[2:]).transpose(0, 1)
