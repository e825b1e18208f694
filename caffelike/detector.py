"""pycaffe's ``caffe.Detector``: R-CNN style windowed detection with a deploy net.

Each window (``ymin, xmin, ymax, xmax`` in image pixels) is cropped from its image, optionally
with ``context_pad`` pixels of surrounding context (R-CNN's feature extraction: the box is
enlarged so that, once warped to the net's input, a ``context_pad`` border is context; parts
outside the image are filled with the mean), warped to the input size, preprocessed by a
:class:`~caffelike.io.pycaffe_io.Transformer` and classified in batches; as pycaffe's
detector.py (whose context crop indexes with floats, which Python 3's numpy refuses: here the
box is made integral first).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import numpy as np

from . import TEST
from .classifier import input_transformer
from .io import pycaffe_io
from .net import Net

__all__ = ["Detector"]


class Detector(Net):
    """Net + preprocessing; :meth:`detect_windows` returns one prediction per window."""

    def __init__(self, model_file: str, pretrained_file: str, mean: np.ndarray | None = None,
                 input_scale: float | None = None, raw_scale: float | None = None,
                 channel_swap: Sequence[int] | None = None, context_pad: int | None = None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows: Iterable[tuple[str, Sequence[Sequence[int]]]]
                       ) -> list[dict[str, Any]]:
        """``[(image file, [window, ...]), ...]`` -> ``[{'window', 'prediction', 'filename'}, ...]``."""
        images_windows = [(name, list(windows)) for name, windows in images_windows]
        crops = []
        for name, windows in images_windows:
            image = pycaffe_io.load_image(name).astype(np.float32)
            crops.extend(self.crop(image, np.asarray(window)) for window in windows)
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(crops), crops[0].shape[2]) + tuple(self.blobs[in_].data.shape[2:]),
                            dtype=np.float32)
        for ix, window_in in enumerate(crops):
            caffe_in[ix] = self.transformer.preprocess(in_, window_in)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections = []
        ix = 0
        for name, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix], "filename": name})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames: Sequence[str]) -> list[dict[str, Any]]:
        """Windows from Selective Search (needs the ``selective_search_ijcv_with_python`` package
        and MATLAB, as in pycaffe), then :meth:`detect_windows`."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise ImportError("detect_selective_search needs the selective_search_ijcv_with_python package "
                              "(and MATLAB); or pass your own windows to detect_windows") from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im: np.ndarray, window: np.ndarray) -> np.ndarray:
        """The HxWxK crop of ``window`` (ymin, xmin, ymax, xmax), with context if configured."""
        window = np.asarray(window)
        crop = im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        if not self.context_pad:
            return crop
        crop_size = self.blobs[self.inputs[0]].width  # a square input, as pycaffe assumes
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        # Enlarge the box about its centre so the context border fits.
        half_h = (window[2] - window[0] + 1) / 2.0
        half_w = (window[3] - window[1] + 1) / 2.0
        center = (window[0] + half_h, window[1] + half_w)
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        full_h = box[2] - box[0] + 1
        full_w = box[3] - box[1] + 1
        scale_h = crop_size / full_h
        scale_w = crop_size / full_w
        pad_y = int(round(max(0, -box[0]) * scale_h))  # the part outside the image
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h = box[2] - box[0] + 1
        clip_w = box[3] - box[1] + 1
        if not (clip_h > 0 and clip_w > 0):
            raise ValueError(f"window {list(window)} lies outside the {im_h}x{im_w} image")
        crop_h = min(int(round(clip_h * scale_h)), crop_size - pad_y)
        crop_w = min(int(round(clip_w * scale_w)), crop_size - pad_x)
        box = box.astype(int)
        context_crop = pycaffe_io.resize_image(im[box[0]:box[2], box[1]:box[3]], (crop_h, crop_w))
        out = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        out[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context_crop
        return out

    def configure_crop(self, context_pad: int | None) -> None:
        """Set the crop size (the input's HxWxK) and, with context, the mean to pad with."""
        in_ = self.inputs[0]
        tpose = self.transformer.transpose[in_]
        inv_tpose = [tpose[t] for t in tpose]
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_tpose]
        self.context_pad = context_pad
        if not self.context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        # The padding is added before preprocessing, so it needs the mean in raw image space.
        crop_mean = mean.copy().transpose(inv_tpose)
        channel_order = self.transformer.channel_swap.get(in_)
        if channel_order is not None:
            crop_mean = crop_mean[:, :, [list(channel_order).index(i) for i in range(crop_mean.shape[2])]]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
