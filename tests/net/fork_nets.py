"""Helpers for the fork deploy nets of issue 16 (SENet, ShuffleNet, SegNet/ENet, GoogLeNet-BN):
generated weights, and the prototxt OpenCV dnn reads to compute the forks' values."""
from __future__ import annotations

import pathlib

import numpy as np
from google.protobuf import text_format

from caffelike.proto import caffe_pb2


def fill_generated(net, seed: int = 0) -> None:
    """Weights keeping activations O(1) through deep nets (BatchNorm, Scale and BN near identity,
    other blobs scaled by 1/sqrt(fan-in)), one numpy PCG64 stream in net.params order."""
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        if kind == "BatchNorm":
            blobs[0].data[...] = rng.normal(scale=0.1, size=blobs[0].data.shape)
            blobs[1].data[...] = rng.uniform(0.5, 1.5, size=blobs[1].data.shape)
            blobs[2].data[...] = 1
        elif kind in ("Scale", "BN"):  # BN: SegNet/ENet's scale and shift
            blobs[0].data[...] = rng.uniform(0.5, 1.0, size=blobs[0].data.shape)
            if len(blobs) > 1:
                blobs[1].data[...] = rng.normal(scale=0.1, size=blobs[1].data.shape)
        else:
            for b in blobs:
                fan = max(1, int(np.prod(b.data.shape[1:])))
                b.data[...] = rng.normal(scale=1 / np.sqrt(fan), size=b.data.shape)


def opencv_prototxt(path: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """``path`` rewritten so that OpenCV dnn computes the forks' values, written to ``out``.

    * Axpy (hujie-frank/SENet): the fork computes ``a * bottom[1] + bottom[2]``; OpenCV's importer
      ``a * bottom[2] + bottom[1]`` (a Scale of bottom 2, then an Eltwise sum): bottoms 1 and 2
      are exchanged.
    * ConvolutionDepthwise (BVLC PR 5665): the fork is depthwise whatever ``group`` says; OpenCV
      turns it into a Convolution that reads ``group``: ``group`` is set to ``num_output``.
    """
    net = caffe_pb2.NetParameter()
    text_format.Parse(path.read_text(), net)
    for layer in net.layer:
        if layer.type == "Axpy":
            layer.bottom[1], layer.bottom[2] = layer.bottom[2], layer.bottom[1]
        elif layer.type == "ConvolutionDepthwise":
            layer.convolution_param.group = layer.convolution_param.num_output
    out.write_text(text_format.MessageToString(net))
    return out
