"""pycaffe's ``caffe.Classifier``: a TEST-phase Net that classifies HxWxK images.

Images are resized to ``image_dims``, then centre-cropped (or oversampled: 4 corners + centre
and their mirrors, predictions averaged) to the net's input size, then preprocessed by a
:class:`~caffelike.io.pycaffe_io.Transformer` (transpose to CxHxW, then the optional
channel swap, raw scale, mean and input scale), as pycaffe's classifier.py does.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import TEST
from .io import pycaffe_io
from .net import Net


def input_transformer(net: Net, mean: np.ndarray | None = None, input_scale: float | None = None,
                      raw_scale: float | None = None, channel_swap: Sequence[int] | None = None
                      ) -> pycaffe_io.Transformer:
    """pycaffe's Classifier/Detector preprocessing for the net's first input: HxWxK images
    transposed to KxHxW, then the optional channel swap, raw scale, mean and input scale."""
    in_ = net.inputs[0]
    transformer = pycaffe_io.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


class Classifier(Net):
    """Net + preprocessing; :meth:`predict` returns (N x C) class probabilities."""

    def __init__(self, model_file: str, pretrained_file: str, image_dims: Sequence[int] | None = None,
                 mean: np.ndarray | None = None, input_scale: float | None = None,
                 raw_scale: float | None = None, channel_swap: Sequence[int] | None = None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        in_ = self.inputs[0]
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None and len(image_dims) else self.crop_dims)

    def predict(self, inputs: Sequence[np.ndarray], oversample: bool = True) -> np.ndarray:
        """Class probabilities of HxWxK images (averaged over 10 crops with ``oversample``)."""
        h, w = (int(v) for v in self.image_dims[:2])
        batch = np.zeros((len(inputs), h, w, inputs[0].shape[2]), dtype=np.float32)
        for ix, image in enumerate(inputs):
            batch[ix] = pycaffe_io.resize_image(image, (h, w))
        if oversample:
            batch = pycaffe_io.oversample(batch, self.crop_dims)
        else:
            centre = np.array([h, w]) / 2.0
            box = np.concatenate([centre - self.crop_dims / 2.0, centre + self.crop_dims / 2.0]).astype(int)
            batch = batch[:, box[0]:box[2], box[1]:box[3], :]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, im) for im in batch]).astype(np.float32)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
