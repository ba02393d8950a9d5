"""The two VQ-VAEs of the paper (§5.2): an MLP for the synthetic data, a conv net for CIFAR-10.

Both expose ``encode`` (latents with ``token_dim`` as the last axis), ``decode`` and a
``forward`` returning :class:`ModelOutput`. With ``quantizer=None`` the model is a plain
autoencoder: that is the pretraining stage of the paper's remedy for tokens collapse
("pretrain without VQ, then fine-tune with VQ"); :meth:`attach_quantizer` then turns the
pretrained autoencoder into the VQ-VAE with the same weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .errors import ConfigError, check_positive_int


@dataclass
class ModelOutput:
    recon: torch.Tensor
    z: torch.Tensor                 # embeddings (encoder outputs), [..., token_dim]
    quantized: torch.Tensor         # tokens chosen for z (straight-through), same shape
    indices: Optional[torch.Tensor]  # [...], None without a quantizer
    vq_loss: torch.Tensor


class _VQVAE(nn.Module):
    token_dim: int

    def __init__(self):
        super().__init__()
        self.quantizer: Optional[nn.Module] = None

    def attach_quantizer(self, quantizer: Optional[nn.Module]):
        if quantizer is not None and quantizer.token_dim != self.token_dim:
            raise ConfigError(f"quantizer token_dim={quantizer.token_dim} does not match the model's "
                              f"token_dim={self.token_dim}")
        self.quantizer = quantizer
        return self

    def forward(self, x: torch.Tensor) -> ModelOutput:
        z = self.encode(x)
        if self.quantizer is None:
            return ModelOutput(self.decode(z), z, z, None, z.new_zeros(()))
        quantized, indices, loss = self.quantizer(z)
        return ModelOutput(self.decode(quantized), z, quantized, indices, loss)


class MLPVQVAE(_VQVAE):
    """Synthetic-data VQ-VAE: encoder d -> H -> H -> d, decoder d -> 32 -> 32 -> d (ReLU).

    The encoder's d-dimensional output is split into ``d / token_dim`` latent vectors, each
    quantized against one shared codebook (2-D and 3-D data: token_dim 1, so every coordinate
    is a 1-D embedding; 8-D: token_dim 4, two latent vectors per point).
    ``encoder_hidden`` is the capacity knob of the embeddings-collapse experiment (§3.2).
    """

    def __init__(self, dim: int, token_dim: int = 1, encoder_hidden: int = 32, decoder_hidden: int = 32,
                 quantizer: Optional[nn.Module] = None):
        super().__init__()
        for name, v in [("dim", dim), ("token_dim", token_dim), ("encoder_hidden", encoder_hidden),
                        ("decoder_hidden", decoder_hidden)]:
            check_positive_int(name, v)
        if dim % token_dim:
            raise ConfigError(f"token_dim={token_dim} must divide the data dimension dim={dim} "
                              f"(allowed: {[t for t in range(1, dim + 1) if dim % t == 0]})")
        self.dim, self.token_dim, self.n_latents = dim, token_dim, dim // token_dim
        self.encoder = nn.Sequential(nn.Linear(dim, encoder_hidden), nn.ReLU(),
                                     nn.Linear(encoder_hidden, encoder_hidden), nn.ReLU(),
                                     nn.Linear(encoder_hidden, dim))
        self.decoder = nn.Sequential(nn.Linear(dim, decoder_hidden), nn.ReLU(),
                                     nn.Linear(decoder_hidden, decoder_hidden), nn.ReLU(),
                                     nn.Linear(decoder_hidden, dim))
        self.attach_quantizer(quantizer)

    def encode(self, x):
        return self.encoder(x).view(x.shape[0], self.n_latents, self.token_dim)

    def decode(self, zq):
        return self.decoder(zq.reshape(zq.shape[0], self.dim))


class _Residual(nn.Module):
    def __init__(self, channels, hidden):
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(hidden, channels, 1))

    def forward(self, x):
        return x + self.block(x)


def _residual_stack(channels, hidden, n):
    return nn.Sequential(*[_Residual(channels, hidden) for _ in range(n)], nn.ReLU())


class ConvVQVAE(_VQVAE):
    """CIFAR-10 VQ-VAE in the style of DeepMind sonnet's ``vqvae_example``.

    Encoder: two stride-2 4x4 convs (32x32 -> 8x8), a 3x3 conv, ``n_residual`` residual
    blocks, a 1x1 conv to ``token_dim``. Decoder mirrors it with ``channels`` width.
    ``encoder_channels`` (default ``channels``) sets the encoder's width alone: the paper's
    embeddings-collapse sweep on CIFAR-10 shrinks it from 64 to 2 with the decoder fixed.
    Latents are returned channel-last, [B, 8, 8, token_dim].
    """

    def __init__(self, token_dim: int = 64, channels: int = 128, residual_channels: int = 64,
                 encoder_channels: Optional[int] = None, n_residual: int = 2,
                 quantizer: Optional[nn.Module] = None):
        super().__init__()
        encoder_channels = channels if encoder_channels is None else encoder_channels
        for name, v in [("token_dim", token_dim), ("channels", channels), ("residual_channels", residual_channels),
                        ("encoder_channels", encoder_channels), ("n_residual", n_residual)]:
            check_positive_int(name, v)
        self.token_dim = token_dim
        e, eh = encoder_channels, max(1, encoder_channels // 2)
        enc_res = max(1, min(residual_channels, e))
        self.encoder = nn.Sequential(
            nn.Conv2d(3, eh, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(eh, e, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(e, e, 3, padding=1),
            _residual_stack(e, enc_res, n_residual),
            nn.Conv2d(e, token_dim, 1),
        )
        c = channels
        self.decoder = nn.Sequential(
            nn.Conv2d(token_dim, c, 3, padding=1),
            _residual_stack(c, residual_channels, n_residual),
            nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c // 2, 3, 4, stride=2, padding=1),
        )
        self.attach_quantizer(quantizer)

    def encode(self, x):
        return self.encoder(x).permute(0, 2, 3, 1)        # [B, H, W, D]

    def decode(self, zq):
        return self.decoder(zq.permute(0, 3, 1, 2).contiguous())
