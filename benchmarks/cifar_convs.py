#!/usr/bin/env python
"""Where a CIFAR-10 training step's time goes on a CPU, layer by layer, and what other layouts of the
same convolutions would save (issue 19: the ``ci`` book's CIFAR-10 runs are bound by these layers).

    python benchmarks/cifar_convs.py            # about 5 s on 2 idle cores
    python benchmarks/cifar_convs.py --quick    # a smoke test: batch 16, few repeats

The model is notebook 03's ``ci`` conv VQ-VAE (``config.CI_CIFAR``: channels 16, residual 8,
token_dim 16; one model, batch 128, one torch thread, as every run of the book). Its layers' inputs
are recorded on one forward pass of random images. Each layer's forward and backward (gradients of
its input, weight and bias) are then timed, best of ``--repeats``, in three layouts:

- **as trained**: the layer as ``vqpaper.models`` runs it (NCHW tensors);
- **channels-last**: the same convolution on NHWC tensors (``torch.channels_last``);
- **sub-pixel** (the two transposed convolutions of the decoder only): a stride-2, 4 x 4 transposed
  convolution written as a 3 x 3 convolution with 4x the output channels followed by
  ``pixel_shuffle``, the same map with another order of operations.

Each alternative prints its largest difference from the layer as trained (output and gradients, each
relative to its largest value): any nonzero value means its runs' numbers would move (the committed references would have to
be regenerated). The last line sums the layers: ``ci conv layers: as trained X ms, channels-last Y ms``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vqpaper import config  # noqa: E402
from vqpaper.models import ConvVQVAE, GroupConv2d  # noqa: E402


def layer_inputs(batch: int) -> list[tuple[str, GroupConv2d, torch.Tensor]]:
    """Every conv layer of the ``ci`` model, in the order of a forward pass, with the input it saw."""
    ci = {k: config.CI_CIFAR[k] for k in ("token_dim", "channels", "residual_channels")}
    model = ConvVQVAE(**ci, seeds=(0,))
    seen = []
    names = {module: name for name, module in model.named_modules()}
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append((names[mod], mod, args[0].detach().clone())))
             for m in model.modules() if isinstance(m, GroupConv2d)]
    x = torch.rand(1, batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.decode(model.encode(x))
    for h in hooks:
        h.remove()
    return seen


def _sub_pixel(layer: GroupConv2d, x, weight, bias):
    """A 4 x 4, stride-2, padding-1 transposed convolution as a 3 x 3 convolution and ``pixel_shuffle``.
    Output row 2i + a takes input rows i - 1 and i (a = 0: kernel rows 3 and 1) or i and i + 1
    (a = 1: kernel rows 2 and 0); columns alike."""
    cin, cout = weight.shape[:2]
    taps = {0: [(0, 3), (1, 1)], 1: [(1, 2), (2, 0)]}  # output phase -> (row of the 3 x 3 kernel, row of the 4 x 4)
    rows = []
    for a in (0, 1):
        for c in (0, 1):
            k = weight.new_zeros(cout, cin, 3, 3)
            for pr, kr in taps[a]:
                for pc, kc in taps[c]:
                    k[:, :, pr, pc] = weight[:, :, kr, kc].t()
            rows.append(k)
    w3 = torch.stack(rows, 1).reshape(cout * 4, cin, 3, 3)  # channel 4o + 2a + c, as pixel_shuffle reads it
    return F.pixel_shuffle(F.conv2d(x, w3, bias.repeat_interleave(4), padding=1), 2)


def _has_sub_pixel_form(layer: GroupConv2d) -> bool:
    return layer.transposed and layer.stride == 2 and layer.padding == 1 and layer.weight.shape[-1] == 4


def time_layer(layer: GroupConv2d, x: torch.Tensor, how: str, repeats: int,
               input_grad: bool) -> tuple[float, float, list[torch.Tensor]]:
    """Best forward and backward time (ms) of ``layer`` on ``x`` laid out ``how``, and what it computes:
    the output and the gradients of the weight, the bias and (``input_grad``: not for the images) the input.
    As trained and channels-last call the layer itself; the sub-pixel form gets copies of its parameters."""
    x = x.clone()
    if how == "channels-last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(input_grad)
    layer.zero_grad(set_to_none=True)
    if how == "sub-pixel":
        weight = layer.weight.detach()[0].clone().requires_grad_(True)  # one model: [in, out, 4, 4]
        bias = layer.bias.detach()[0].clone().requires_grad_(True)
        f = lambda: _sub_pixel(layer, x, weight, bias)  # noqa: E731
    else:
        weight, bias, f = layer.weight, layer.bias, lambda: layer(x)
    out = f()
    grad = torch.linspace(-1, 1, out.numel()).reshape(out.shape)  # the same upstream gradient in every layout
    out.backward(grad)
    grads = (weight.grad.reshape(layer.weight.shape[1:]), bias.grad.reshape(-1)) + ((x.grad,) if input_grad else ())
    computed = [t.detach().contiguous().clone() for t in (out,) + grads]
    fwd = bwd = float("inf")
    for _ in range(repeats + 1):  # the first call warms up; the gradients add up, as into a training step's buffer
        t0 = time.perf_counter()
        y = f()
        t1 = time.perf_counter()
        y.backward(grad)
        t2 = time.perf_counter()
        fwd, bwd = min(fwd, t1 - t0), min(bwd, t2 - t1)
    return fwd * 1e3, bwd * 1e3, computed


def _relative_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The largest difference of any computed tensor, relative to that tensor's largest value."""
    return max(float((u - v).abs().max() / v.abs().max().clamp_min(1e-30)) for u, v in zip(a, b))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: batch 16, 3 repeats")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per layer and layout (default 20)")
    args = p.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 20)
    if repeats < 1:
        p.error(f"--repeats must be at least 1, got {repeats}")
    batch = 16 if args.quick else 128
    config.set_threads(1)
    print(f"ci conv VQ-VAE, batch {batch}, 1 thread, torch {torch.__version__}; ms, best of {repeats}")
    print(f"{'layer':34s} {'input':>16s} {'as trained':>16s} {'channels-last':>16s} {'rel diff':>9s}"
          f" {'sub-pixel':>16s} {'rel diff':>9s}")
    totals = {"as trained": 0.0, "channels-last": 0.0}
    transposed = {"as trained": 0.0, "sub-pixel": 0.0}
    for index, (name, layer, x) in enumerate(layer_inputs(batch)):
        row, ref = {}, None
        for how in ("as trained", "channels-last", "sub-pixel"):
            if how == "sub-pixel" and not _has_sub_pixel_form(layer):
                continue
            fwd, bwd, computed = time_layer(layer, x, how, repeats, input_grad=index > 0)
            diff = 0.0 if ref is None else _relative_difference(computed, ref)
            ref = computed if ref is None else ref
            row[how] = (fwd, bwd, diff)
            if how in totals:
                totals[how] += fwd + bwd
            if layer.transposed and how in transposed:
                transposed[how] += fwd + bwd
        cells = [f"{row[h][0]:6.2f} + {row[h][1]:6.2f}" + (f" {row[h][2]:9.1e}" if h != "as trained" else "")
                 if h in row else f"{'':16s} {'':9s}" for h in ("as trained", "channels-last", "sub-pixel")]
        kind = "T" if layer.transposed else ""
        print(f"{name + ' ' + kind:34s} {'x'.join(map(str, x.shape[1:])):>16s} " + " ".join(cells))
    print(f"transposed convs: as trained {transposed['as trained']:.1f} ms, sub-pixel {transposed['sub-pixel']:.1f} ms")
    print(f"ci conv layers: as trained {totals['as trained']:.1f} ms, channels-last {totals['channels-last']:.1f} ms "
          f"(forward + backward of one step, batch {batch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
