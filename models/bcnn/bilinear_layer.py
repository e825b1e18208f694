"""Bilinear pooling for the bilinear CNN (Lin, RoyChowdhury, Maji, ICCV 2015), as a Python layer.

For a bottom x of shape (N, C, H, W), with X the C x HW matrix of one image:

    B = X X^T / (H W)              (C x C, flattened to C*C)
    y = sign(B) * sqrt(|B|)        (signed square root)
    z = y / ||y||_2                (L2 normalisation)

top: (N, C*C). Two implementations of the same formulas:

* ``BilinearLayer``: a pycaffe ``Layer`` with numpy forward/backward; it runs unchanged in real
  Caffe (``python_param { module: "bilinear_layer" layer: "BilinearLayer" }``) and in caffelike;
* ``BilinearPooling``: a ``torch.nn.Module`` (caffelike runs nn.Module Python layers through
  autograd, faster for a VGG trunk); use ``layer: "BilinearPooling"``.

The square root's gradient 1 / (2 sqrt|B|) is unbounded at 0; both add ``EPS`` to the root
in the backward / forward (the B-CNN authors' code does the same).
"""
from __future__ import annotations

import numpy as np

try:  # real pycaffe when it is installed, caffelike otherwise
    import caffe
except ImportError:  # pragma: no cover - depends on the machine
    import caffelike as caffe

EPS = 1e-8  # keeps sqrt'(0) and 1/||y|| finite


def bilinear_forward(x: np.ndarray) -> tuple[np.ndarray, dict]:
    """z for x (N, C, H, W); also the intermediates the backward needs."""
    n, c = x.shape[:2]
    m = int(np.prod(x.shape[2:]))
    feats = x.reshape(n, c, m).astype(np.float64)
    gram = np.einsum("ncm,ndm->ncd", feats, feats).reshape(n, c * c) / m
    root = np.sqrt(np.abs(gram) + EPS)
    y = np.sign(gram) * root
    norm = np.sqrt((y * y).sum(axis=1, keepdims=True)) + EPS
    z = y / norm
    return z, {"feats": feats, "root": root, "norm": norm, "z": z, "m": m}


def bilinear_backward(dz: np.ndarray, cache: dict) -> np.ndarray:
    """d loss / d x from d loss / d z."""
    z, norm, root, feats, m = cache["z"], cache["norm"], cache["root"], cache["feats"], cache["m"]
    n, c, _ = feats.shape
    dy = (dz - z * (z * dz).sum(axis=1, keepdims=True)) / norm
    dgram = (dy / (2.0 * root)).reshape(n, c, c)
    dfeats = np.einsum("ncd,ndm->ncm", dgram + dgram.transpose(0, 2, 1), feats) / m
    return dfeats


class BilinearLayer(caffe.Layer):
    """pycaffe layer: one bottom (N, C, H, W) -> one top (N, C*C)."""

    def setup(self, bottom, top):
        if len(bottom) != 1 or len(top) != 1:
            raise Exception("BilinearLayer takes one bottom and gives one top")

    def reshape(self, bottom, top):
        n, c = bottom[0].data.shape[:2]
        top[0].reshape(n, c * c)

    def forward(self, bottom, top):
        top[0].data[...] = bilinear_forward(bottom[0].data)[0]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # recomputed from the bottom: no state kept between forward and backward
            _, cache = bilinear_forward(bottom[0].data)
            dx = bilinear_backward(top[0].diff.astype(np.float64), cache)
            bottom[0].diff[...] = dx.reshape(bottom[0].data.shape)


def _torch_module():
    import torch

    class BilinearPooling(torch.nn.Module):
        """torch version of the same formulas (autograd gives the gradient)."""

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            n, c = x.shape[:2]
            feats = x.reshape(n, c, -1)
            gram = torch.bmm(feats, feats.transpose(1, 2)).reshape(n, c * c) / feats.shape[2]
            y = torch.sign(gram) * torch.sqrt(gram.abs() + EPS)
            return y / (y.norm(dim=1, keepdim=True) + EPS)

    return BilinearPooling


BilinearPooling = _torch_module()
