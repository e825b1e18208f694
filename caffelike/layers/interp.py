"""PSPNet's ``Interp`` layer (hszhao/PSPNet ``src/caffe/layers/interp_layer.cpp`` and
``src/caffe/util/interp.cpp``, issue 16): bilinear resizing with aligned corners.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import Layer, Shape, register_layer

Tensor = torch.Tensor


def interp_weights(size_in: int, size_out: int, dtype: torch.dtype,
                   device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The fork's sampling of one axis: ``(i0, i1, lambda0, lambda1)`` per output index.

    As ``caffe_cpu_interp2`` computes it, in float32 whatever the blob type: the ratio is
    ``(in - 1) / (out - 1)`` (0 when ``out == 1``: every output reads input index 0), the source
    position ``r * o`` is truncated to ``i0``, ``i1 = i0 + 1`` except on the last input index,
    and ``lambda1 = position - i0``.
    """
    ratio = (torch.tensor(float(size_in - 1), dtype=torch.float32)
             / torch.tensor(float(size_out - 1), dtype=torch.float32)) if size_out > 1 \
        else torch.tensor(0.0, dtype=torch.float32)
    pos = ratio * torch.arange(size_out, dtype=torch.float32)
    i0 = pos.to(torch.int64)
    i1 = i0 + (i0 < size_in - 1).to(torch.int64)
    lam1 = (pos - i0.to(torch.float32)).to(dtype)
    lam0 = (torch.ones((), dtype=dtype) - lam1)
    if device is not None:
        i0, i1, lam0, lam1 = (t.to(device) for t in (i0, i1, lam0, lam1))
    return i0, i1, lam0, lam1


@register_layer("Interp")
class Interp(Layer):
    """Bilinear resize of a 4-axis blob with aligned corners (PSPNet / DeepLab's ``Interp``).

    ``interp_param``: ``pad_beg``/``pad_end`` (<= 0: crop that many pixels at the start/end of
    both spatial axes) give the effective input ``in_eff = in + pad_beg + pad_end``; the output
    size is, in the fork's order of precedence: ``shrink_factor`` alone ``(in_eff - 1) / s + 1``;
    ``zoom_factor`` alone ``in_eff + (in_eff - 1) * (z - 1)``; ``height`` and ``width``; both
    factors (shrink, then zoom). Output equal to the effective input is a plain crop.

    Fork semantics: the sampling positions and weights are float32 (``interp_weights``); each
    output is ``h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 * p11)``. Backward is the exact
    adjoint (the fork's ``caffe_cpu_interp2_backward``), by autograd. Tests:
    ``tests/layers/test_interp.py`` (OpenCV dnn live, hand cases from interp.cpp, gradcheck).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.interp_param
        self.pad_beg, self.pad_end = int(p.pad_beg), int(p.pad_end)
        if self.pad_beg > 0 or self.pad_end > 0:
            raise self.error(f"pad_beg {self.pad_beg} and pad_end {self.pad_end}: only non-positive "
                             "padding (cropping) is supported, as in the fork")
        if len(self.bottom_shapes[0]) != 4:
            raise self.error(f"bottom shape {self.bottom_shapes[0]}: Interp needs a 4-axis blob (N, C, H, W)")
        self.output_size(self.bottom_shapes[0][2], self.bottom_shapes[0][3])

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The top's (height, width) for a bottom of this height and width, with the fork's checks."""
        p = self.param.interp_param
        h_eff = height + self.pad_beg + self.pad_end
        w_eff = width + self.pad_beg + self.pad_end
        shrink, zoom = p.HasField("shrink_factor"), p.HasField("zoom_factor")
        if shrink and p.shrink_factor < 1:
            raise self.error(f"shrink_factor {p.shrink_factor}: must be >= 1")
        if zoom and p.zoom_factor < 1:
            raise self.error(f"zoom_factor {p.zoom_factor}: must be >= 1")
        if shrink and not zoom:
            h_out, w_out = (h_eff - 1) // p.shrink_factor + 1, (w_eff - 1) // p.shrink_factor + 1
        elif zoom and not shrink:
            h_out, w_out = h_eff + (h_eff - 1) * (p.zoom_factor - 1), w_eff + (w_eff - 1) * (p.zoom_factor - 1)
        elif p.HasField("height") and p.HasField("width"):
            h_out, w_out = int(p.height), int(p.width)
        elif shrink and zoom:
            h_out, w_out = (h_eff - 1) // p.shrink_factor + 1, (w_eff - 1) // p.shrink_factor + 1
            h_out, w_out = h_out + (h_out - 1) * (p.zoom_factor - 1), w_out + (w_out - 1) * (p.zoom_factor - 1)
        else:
            raise self.error("interp_param needs zoom_factor, shrink_factor, or both height and width")
        if h_eff <= 0 or w_eff <= 0:
            raise self.error(f"input {height}x{width} cropped by pad_beg {self.pad_beg}, pad_end "
                             f"{self.pad_end} leaves {h_eff}x{w_eff}; must be positive")
        if h_out <= 0 or w_out <= 0:
            raise self.error(f"output size {h_out}x{w_out} must be positive")
        return h_out, w_out

    def forward(self, x: Tensor) -> list[Tensor]:
        height, width = int(x.shape[2]), int(x.shape[3])
        h_out, w_out = self.output_size(height, width)
        start = -self.pad_beg
        crop = x[:, :, start:height + self.pad_end, start:width + self.pad_end]
        h_in, w_in = int(crop.shape[2]), int(crop.shape[3])
        if (h_in, w_in) == (h_out, w_out):
            return [crop]
        hi0, hi1, h0, h1 = interp_weights(h_in, h_out, x.dtype, x.device)
        wi0, wi1, w0, w1 = interp_weights(w_in, w_out, x.dtype, x.device)
        top_rows, bottom_rows = crop.index_select(2, hi0), crop.index_select(2, hi1)
        h0, h1 = h0[:, None], h1[:, None]
        return [h0 * (w0 * top_rows.index_select(3, wi0) + w1 * top_rows.index_select(3, wi1))
                + h1 * (w0 * bottom_rows.index_select(3, wi0) + w1 * bottom_rows.index_select(3, wi1))]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = bottom_shapes[0]
        return [(n, c) + self.output_size(h, w)]
