"""The book fork's photometric augmentations (Caffe_Long ``data_transformer.cpp``), each a
pure function of a uint8 ``(H, W, C)`` BGR image and its drawn parameters.

The fork applies them, in TRAIN only, to the whole (resized, rotated) image before the crop,
in this order: colour shift, contrast/brightness, smoothing. Each keeps OpenCV's uint8
saturation as the fork's ``cv::Mat`` arithmetic does.
"""
from __future__ import annotations

import cv2
import numpy as np

#: The fork's ``smooth_type`` (``Rand(4)``): 0 Gaussian, 1 box mean, 2 median, 3 box mean of
#: twice the size.
SMOOTH_KINDS = ("gaussian", "blur", "median", "box2x")


def _hwc(img: np.ndarray) -> np.ndarray:
    return img[:, :, None] if img.ndim == 2 else img


def color_shift(img: np.ndarray, bgr: tuple[int, int, int], subtract: bool) -> np.ndarray:
    """Add (or subtract) ``bgr`` to the channels with uint8 saturation.

    The fork fills a copy of the image with ``cv::Scalar(b, g, r)``: a grey image shifts by
    ``b`` only, a fourth channel by 0.
    """
    channels = img.shape[2]
    shift = np.zeros(channels, np.int16)
    shift[:min(3, channels)] = bgr[:min(3, channels)]
    wide = img.astype(np.int16)
    wide = wide - shift if subtract else wide + shift
    return np.clip(wide, 0, 255).astype(np.uint8)


def contrast_table(alpha: float, beta: int) -> np.ndarray:
    """The 256-entry table of ``cv::Mat::convertTo(img, -1, alpha, beta)`` on uint8:
    ``saturate_cast<uchar>(v * alpha + beta)`` with float32 ``alpha``, rounded half to even.

    ``v * alpha + beta`` is one fused multiply-add, as OpenCV computes it on x86-64 with AVX2
    (its dispatched convert kernels, scalar tails included): exact in float64, then rounded
    once to float32. A separate multiply and add differ near ties (alpha 0.88620687,
    beta -1: 145 -> 127 fused, 128 unfused).
    """
    exact = np.arange(256, dtype=np.float64) * np.float64(np.float32(alpha)) + np.float64(beta)
    return np.clip(np.rint(exact.astype(np.float32)), 0, 255).astype(np.uint8)


def contrast_brightness(img: np.ndarray, alpha: float, beta: int) -> np.ndarray:
    """The fork's contrast (``alpha``) and brightness (``beta``) adjustment of every pixel."""
    return _hwc(cv2.LUT(img, contrast_table(alpha, beta)))


def smooth(img: np.ndarray, kind: int, size: int) -> np.ndarray:
    """The fork's smoothing ``kind`` (see :data:`SMOOTH_KINDS`) with kernel ``size`` (odd):
    ``GaussianBlur(size x size, sigma 0)``, ``blur(size x size)``, ``medianBlur(size)`` or
    ``boxFilter(2*size x 2*size)``, with OpenCV's borders (reflect 101; the median replicates
    the edge pixels)."""
    if kind == 0:
        out = cv2.GaussianBlur(img, (size, size), 0)
    elif kind == 1:
        out = cv2.blur(img, (size, size))
    elif kind == 2:
        out = cv2.medianBlur(img, size)
    elif kind == 3:
        out = cv2.boxFilter(img, -1, (2 * size, 2 * size))
    else:
        raise ValueError(f"unknown smoothing kind {kind} (known: 0..3)")
    return _hwc(out)
