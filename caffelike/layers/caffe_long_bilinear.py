"""Bilinear pooling layers of longpeng2008/Caffe_Long (commit ecdb08d): Bilinear and
CompactBilinear (Tensor Sketch), with the fork's semantics (see :mod:`.caffe_long`).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import Layer, Shape, register_layer
from .caffe_long import _refuse_in_place

Tensor = torch.Tensor


def _check_bilinear_bottoms(layer: Layer) -> tuple[Shape, Shape]:
    a, b = layer.bottom_shapes[0], layer.bottom_shapes[1]
    if len(a) != 4 or len(b) != 4:
        raise layer.error(f"bottoms {a} and {b}: {layer.param.type} only supports 4-axis blobs")
    for axis in (0, 2, 3):
        if a[axis] != b[axis]:
            raise layer.error(f"bottoms {a} and {b} differ at axis {axis}; only the channel axis may differ")
    return a, b


@register_layer("Bilinear", bottoms=2)
class Bilinear(Layer):
    """Bilinear pooling: top (N, C1*C2, 1, 1) = sum over the H*W positions of a b^T.

    Caffe_Long semantics: a plain sum over positions (no averaging, no normalisation);
    index ``i*C2 + j`` holds channel i of bottom 0 times channel j of bottom 1. A blob fed
    twice goes through Caffe's split, so its gradient is the sum of both branches.
    Golden: ``Bilinear__two_bottoms``, ``Bilinear__same_bottom``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_bilinear_bottoms(self)

    def forward(self, a: Tensor, b: Tensor) -> list[Tensor]:
        n = a.shape[0]
        out = torch.bmm(a.reshape(n, a.shape[1], -1), b.reshape(n, b.shape[1], -1).transpose(1, 2))
        return [out.reshape(n, -1, 1, 1)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        a, b = bottom_shapes[0], bottom_shapes[1]
        return [(a[0], a[1] * b[1], 1, 1)]


def glibc_rand(seed: int, count: int) -> list[int]:
    """The first ``count`` values of glibc's ``rand()`` after ``srand(seed)`` (TYPE_3 generator)."""
    r = [seed & 0xFFFFFFFF]
    for i in range(1, 31):
        hi, lo = divmod(r[i - 1] if r[i - 1] < 2**31 else r[i - 1] - 2**32, 127773)
        word = 16807 * lo - 2836 * hi
        if word < 0:
            word += 2147483647
        r.append(word)
    r.extend(r[i - 31] for i in range(31, 34))
    out: list[int] = []
    i = 34
    while len(out) < count:
        r.append((r[i - 31] + r[i - 3]) & 0xFFFFFFFF)
        if i >= 344:
            out.append(r[i] >> 1)
        i += 1
    return out


def compact_bilinear_hash(channels: Sequence[int], num_output: int) -> list[tuple[list[int], list[int]]]:
    """The fork's count-sketch hashes: ``srand(1)``, then per bottom i: C_i draws of
    ``rand() % D`` (h_i), then C_i draws of ``2 * (rand() % 2) - 1`` (s_i)."""
    draws = iter(glibc_rand(1, 2 * sum(int(c) for c in channels)))
    out = []
    for c in channels:
        h = [next(draws) % num_output for _ in range(int(c))]
        s = [2 * (next(draws) % 2) - 1 for _ in range(int(c))]
        out.append((h, s))
    return out


@register_layer("CompactBilinear", bottoms=2)
class CompactBilinear(Layer):
    """Compact bilinear pooling (Tensor Sketch), ``compact_bilinear_param { num_output: D }``.

    Each position's channel vector of bottom i is count-sketched to D values with a hash h_i
    and signs s_i; the top is ``D x`` the circular convolution of the two sketches (the fork's
    kiss_fft inverse is unnormalised), summed over H x W when ``sum_pool`` (default true:
    top (N, D, 1, 1)) or kept per position (top (N, D, H, W)). The backward is exact.

    Caffe_Long semantics: the hashes come from glibc ``rand()`` after ``srand(1)``, re-seeded
    at every Reshape, so they depend only on the channel counts and D (see
    :func:`compact_bilinear_hash`); no learned blobs. The fork's CPU code aborts on an odd D
    (its GPU code does not); we compute the same formula for any D. No in-place use.
    Golden: ``CompactBilinear__two_bottoms_d16_sum``, ``__two_bottoms_d8_nosum``,
    ``__same_bottom_d8_sum`` (hash values in their case.json).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.compact_bilinear_param
        if not p.HasField("num_output") or p.num_output <= 0:
            raise self.error("compact_bilinear_param.num_output must be given and positive")
        _refuse_in_place(self)
        a, b = _check_bilinear_bottoms(self)
        self.num_output = int(p.num_output)
        self.sum_pool = bool(p.sum_pool)
        for i, (h, s) in enumerate(compact_bilinear_hash((a[1], b[1]), self.num_output)):
            sketch = torch.zeros(len(h), self.num_output, dtype=torch.float32)
            sketch[torch.arange(len(h)), torch.tensor(h)] = torch.tensor(s, dtype=torch.float32)
            self.register_buffer(f"sketch{i}", sketch, persistent=False)

    def forward(self, a: Tensor, b: Tensor) -> list[Tensor]:
        n, _, height, width = a.shape
        d = self.num_output
        # (N, H*W, D) count sketches of each position's channel vector
        sa = torch.matmul(a.reshape(n, a.shape[1], -1).transpose(1, 2), self.sketch0.to(a.dtype))
        sb = torch.matmul(b.reshape(n, b.shape[1], -1).transpose(1, 2), self.sketch1.to(b.dtype))
        conv = torch.fft.irfft(torch.fft.rfft(sa, dim=-1) * torch.fft.rfft(sb, dim=-1), n=d, dim=-1) * d
        if self.sum_pool:
            return [conv.sum(dim=1).reshape(n, d, 1, 1)]
        return [conv.transpose(1, 2).reshape(n, d, height, width)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        n, _, h, w = bottom_shapes[0]
        return [(n, self.num_output, 1, 1) if self.sum_pool else (n, self.num_output, h, w)]
