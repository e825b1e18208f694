"""The book fork's (Caffe_Long) augmentations in DataTransformer.

TRAIN randomness cannot equal Caffe's RNG, so each random step is tested twice: its drawn
parameters are pinned in a Draw and the deterministic result is compared with a computation
written here from the fork's formulas (src/caffe/data_transformer.cpp, Transform(cv::Mat)):

* colour shift: ``img +/- Scalar(b, g, r)`` with uint8 saturation (``sign == 1`` subtracts);
* contrast/brightness: ``convertTo(img, -1, alpha, beta)`` = ``saturate_cast<uchar>(v*alpha +
  beta)``, rounded half to even (cvRound);
* smoothing ``k = 1 + 2*Rand(max_smooth/2)``: type 0 ``GaussianBlur(k x k, 0)``, 1 ``blur(k x k)``,
  2 ``medianBlur(k)``, 3 ``boxFilter(2k x 2k)``, OpenCV's borders (reflect 101; the median
  replicates the edge);
* order: colour shift, contrast, smoothing, all on the whole image, then crop/mirror/mean/scale;

and the draws are checked for their ranges and for ``apply_probability``. TEST-phase
behaviour is pinned by the golden cases (test_caffe_long_image_data.py).
"""
from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pytest

from caffelike.data.transformer import FORK_FIELDS, DataTransformer, Draw, TransformFailure
from caffelike.errors import LayerError, Where
from caffelike.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
MEAN = [104.0, 117.0, 123.0]


WHERE = Where(file="net.prototxt", line=3, layer="data", type="ImageData")


def make(phase=TRAIN, **fields) -> DataTransformer:
    return DataTransformer(caffe_pb2.TransformationParameter(**fields), phase, WHERE)


def finish(img: np.ndarray, crop: int, h_off: int, w_off: int, mirror: bool, scale: float,
           mean=None) -> np.ndarray:
    """Caffe's copy loop: crop, mirror, (pixel - mean) * scale, in float32, CHW."""
    height, width, channels = img.shape
    ch, cw = (crop, crop) if crop else (height, width)
    out = np.zeros((channels, ch, cw), np.float32)
    for c in range(channels):
        m = np.float32(mean[c]) if mean is not None else np.float32(0)
        for y in range(ch):
            for x in range(cw):
                value = (np.float32(img[h_off + y, w_off + x, c]) - m) * np.float32(scale)
                out[c, y, cw - 1 - x if mirror else x] = value
    return out


def shifted(img: np.ndarray, bgr, subtract: bool) -> np.ndarray:
    out = img.astype(np.int32).copy()
    for c in range(min(3, img.shape[2])):
        out[:, :, c] += -bgr[c] if subtract else bgr[c]
    return np.clip(out, 0, 255).astype(np.uint8)


def contrasted(img: np.ndarray, alpha: float, beta: int) -> np.ndarray:
    """convertTo's v*alpha + beta: one fused multiply-add on x86-64 (exact in float64, one
    rounding to float32), then cvRound (half to even) and saturation."""
    fused = (img.astype(np.float64) * float(np.float32(alpha)) + beta).astype(np.float32)
    return np.clip(np.rint(fused), 0, 255).astype(np.uint8)


def reflect101(img: np.ndarray, before: int, after: int) -> np.ndarray:
    return np.pad(img, ((before, after), (before, after), (0, 0)), mode="reflect")


def box_mean(img: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size x size window anchored at its centre (size // 2), float64."""
    before = size // 2
    padded = reflect101(img.astype(np.float64), before, size - 1 - before)
    h, w = img.shape[:2]
    total = np.zeros(img.shape, np.float64)
    for dy in range(size):
        for dx in range(size):
            total += padded[dy:dy + h, dx:dx + w]
    return total / (size * size)


# OpenCV's fixed Gaussian kernels for sigma <= 0 (getGaussianKernel's small-size table)
GAUSS = {1: [1.0], 3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625]}


def gauss(img: np.ndarray, size: int) -> np.ndarray:
    k = np.asarray(GAUSS[size])
    r = size // 2
    padded = reflect101(img.astype(np.float64), r, r)
    h, w = img.shape[:2]
    rows = sum(k[i] * padded[i:i + h, :] for i in range(size))
    return sum(k[i] * rows[:, i:i + w] for i in range(size))


@pytest.fixture
def img() -> np.ndarray:
    return np.random.default_rng(11).integers(0, 256, (13, 15, 3), dtype=np.uint8)


# -- which fields make a transformer the fork's ------------------------------------------------

def test_fork_fields_are_caffe_longs_numbers_8_to_26():
    numbers = {f.name: f.number for f in caffe_pb2.TransformationParameter.DESCRIPTOR.fields}
    assert sorted(numbers[n] for n in FORK_FIELDS) == list(range(8, 27))
    assert not make(TRAIN, crop_size=4, mirror=True, mean_value=MEAN).fork
    assert make(TEST, min_side=40).fork and make(TEST, apply_probability=0.5).fork


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_parsed_and_ignored_fields_change_nothing(img, phase):
    """min/max_scaling_factor, min_side, crop_h/crop_w: the fork never reads them."""
    plain = make(phase, crop_size=8, mean_value=MEAN, scale=0.5)
    ignored = make(phase, crop_size=8, mean_value=MEAN, scale=0.5, min_scaling_factor=0.5,
                   max_scaling_factor=2.0, min_side=40, crop_h=3, crop_w=5)
    for seed in range(20):
        a = plain.sample(np.random.default_rng(seed), 13, 15)
        b = ignored.sample(np.random.default_rng(seed), 13, 15)
        assert a == b
        np.testing.assert_array_equal(plain.apply(img, a), ignored.apply(img, b))
    assert make(phase, min_side=40).output_shape(13, 15, 3) == (3, 13, 15)


# -- pinned draws against the fork's formulas ------------------------------------------------

@pytest.mark.parametrize("subtract", [False, True])
def test_colour_shift_saturates_per_channel(img, subtract):
    t = make(TRAIN, crop_size=9, mean_value=MEAN, scale=0.25, max_color_shift=60)
    bgr = (7, 60, 33)
    out = t.apply(img, Draw(h_off=2, w_off=5, color_shift=bgr, color_subtract=subtract))
    want = finish(shifted(img, bgr, subtract), 9, 2, 5, False, 0.25, MEAN)
    np.testing.assert_array_equal(out, want)
    assert (want == (np.float32(255) - np.float32(MEAN)[:, None, None]) * np.float32(0.25)).any() \
        or (want == (-np.float32(MEAN)[:, None, None]) * np.float32(0.25)).any()  # saturation hit


def test_colour_shift_of_a_grey_image_uses_blue_only():
    grey = np.full((4, 5, 1), 100, np.uint8)
    out = make(TRAIN, max_color_shift=9).apply(grey, Draw(color_shift=(9, 1, 2)))
    np.testing.assert_array_equal(out, np.full((1, 4, 5), 109, np.float32))


@pytest.mark.parametrize("alpha,beta", [(1.5, 0), (0.8125, -5), (1.19, 5), (0.8, 3)])
def test_contrast_brightness_is_convert_to(img, alpha, beta):
    t = make(TRAIN, crop_size=11, scale=1.0, contrast_brightness_adjustment=True)
    out = t.apply(img, Draw(h_off=1, w_off=3, mirror=True, contrast=alpha, brightness=beta))
    np.testing.assert_array_equal(out, finish(contrasted(img, alpha, beta), 11, 1, 3, True, 1.0))


def test_contrast_agrees_with_opencvs_own_convert_kernel(img):
    """cv2.convertScaleAbs runs OpenCV's convert kernel with |.|: equal where v*alpha+beta >= 0
    (and away from the near-ties where fused and unfused arithmetic round apart, so that this
    holds on CPUs without FMA too)."""
    t = make(TRAIN, contrast_brightness_adjustment=True)
    rng = np.random.default_rng(5)
    ramp = np.tile(np.arange(256, dtype=np.uint8), (3, 1))[:, :, None]
    for _ in range(300):
        alpha, beta = float(np.float32(rng.uniform(0.8, 1.2))), int(rng.integers(-5, 6))
        out = t.apply(ramp, Draw(contrast=alpha, brightness=beta))[0]
        ref = cv2.convertScaleAbs(ramp[:, :, 0], alpha=alpha, beta=float(beta))
        positive = np.arange(256) * alpha + beta >= 0
        unfused = np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta)
        unfused = np.clip(np.rint(unfused), 0, 255)
        clear = positive & (unfused == out[0])
        assert clear.sum() >= positive.sum() - 2
        np.testing.assert_array_equal(out[:, clear], ref[:, clear])
        assert not out[:, ~positive].any()
    near_tie = t.apply(np.full((1, 1, 1), 145, np.uint8), Draw(contrast=0.88620687, brightness=-1))
    assert near_tie.item() == 127  # fused; a separate multiply and add would give 128


def test_contrast_rounds_half_to_even_and_saturates():
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    out = make(TRAIN, contrast_brightness_adjustment=True).apply(ramp, Draw(contrast=1.5, brightness=0))
    flat = out.ravel()
    assert flat[1] == 2 and flat[3] == 4 and flat[5] == 8  # 1.5 -> 2, 4.5 -> 4, 7.5 -> 8
    assert flat[171] == 255 and flat[170] == 255 and flat[169] == 254
    dark = make(TRAIN, contrast_brightness_adjustment=True).apply(ramp, Draw(contrast=0.8, brightness=-5))
    assert dark.min() == 0 and dark.ravel()[6] == 0 and dark.ravel()[7] == 1  # 0.6 -> 1


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
@pytest.mark.parametrize("size", [1, 3, 5])
def test_smoothing_is_the_forks_filter(img, kind, size):
    t = make(TRAIN, smooth_filtering=True, max_smooth=6)
    out = t.apply(img, Draw(smooth=kind, smooth_size=size))
    formula = {0: lambda: cv2.GaussianBlur(img, (size, size), 0),
               1: lambda: cv2.blur(img, (size, size)),
               2: lambda: cv2.medianBlur(img, size),
               3: lambda: cv2.boxFilter(img, -1, (2 * size, 2 * size))}[kind]()
    np.testing.assert_array_equal(out, formula.transpose(2, 0, 1).astype(np.float32))
    # and the same filters written out in numpy (OpenCV's uint8 rounding: within one level)
    if kind == 2:
        r = size // 2  # medianBlur replicates the edge pixels
        padded = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
        windows = np.stack([padded[dy:dy + 13, dx:dx + 15] for dy in range(size) for dx in range(size)])
        np.testing.assert_array_equal(out, np.median(windows, axis=0).transpose(2, 0, 1))
    else:
        smooth = {0: lambda: gauss(img, size), 1: lambda: box_mean(img, size),
                  3: lambda: box_mean(img, 2 * size)}[kind]()
        np.testing.assert_allclose(out, smooth.transpose(2, 0, 1), rtol=0, atol=1.0)


def test_photometric_order_is_shift_contrast_smooth_on_the_whole_image(img):
    t = make(TRAIN, crop_size=7, mirror=True, mean_value=MEAN, scale=0.017, max_color_shift=20,
             contrast_brightness_adjustment=True, smooth_filtering=True)
    draw = Draw(mirror=True, h_off=6, w_off=0, color_shift=(20, 3, 11), color_subtract=True,
                contrast=1.1, brightness=-4, smooth=1, smooth_size=5)
    whole = cv2.blur(contrasted(shifted(img, (20, 3, 11), True), 1.1, -4), (5, 5))
    np.testing.assert_array_equal(t.apply(img, draw), finish(whole, 7, 6, 0, True, 0.017, MEAN))
    # smoothing the crop alone would differ at its border: the fork smooths before cropping
    crop_first = cv2.blur(contrasted(shifted(img, (20, 3, 11), True), 1.1, -4)[6:13, 0:7], (5, 5))
    assert not np.array_equal(t.apply(img, draw), finish(crop_first, 0, 0, 0, True, 0.017, MEAN))


def test_segmentation_order_is_contrast_then_shift_without_smoothing(img):
    """The fork's TransformImageSeg/Prob: brightness before colour, no smoothing step."""
    draw = Draw(color_shift=(30, 0, 9), contrast=1.3, brightness=-2, smooth=0, smooth_size=5)
    out = DataTransformer.photometric(img, draw, segmentation=True)
    np.testing.assert_array_equal(out, shifted(contrasted(img, 1.3, -2), (30, 0, 9), False))
    assert not np.array_equal(out, contrasted(shifted(img, (30, 0, 9), False), 1.3, -2))


def test_photometric_steps_follow_the_resize(img):
    t = make(TRAIN, min_side_min=10, min_side_max=12, contrast_brightness_adjustment=True)
    out = t.apply(img, Draw(side=10, contrast=1.2, brightness=2))
    resized = cv2.resize(img, (math.ceil(15 / (13 / 10)), 10), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out, finish(contrasted(resized, 1.2, 2), 0, 0, 0, False, 1.0))


# -- the draws -------------------------------------------------------------------------------

FULL = dict(max_color_shift=10, contrast_brightness_adjustment=True, min_contrast=0.7,
            max_contrast=1.3, max_brightness_shift=4, smooth_filtering=True, max_smooth=6)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_each_step_applies_with_apply_probability(p):
    t = make(TRAIN, apply_probability=p, **FULL)
    n = 4000
    rng = np.random.default_rng(21)
    draws = [t.sample(rng, 20, 20) for _ in range(n)]
    for applied in ([d.color_shift is not None for d in draws], [d.contrast is not None for d in draws],
                    [d.smooth is not None for d in draws]):
        rate = float(np.mean(applied))
        assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9, rate
    # the three coins are independent: all three together about p^3
    together = np.mean([d.color_shift is not None and d.contrast is not None and d.smooth is not None
                        for d in draws])
    assert abs(together - p ** 3) <= 5 * math.sqrt(max(p ** 3 * (1 - p ** 3), 1e-12) / n) + 1e-9


def test_drawn_parameters_cover_the_forks_ranges():
    t = make(TRAIN, apply_probability=1.0, **FULL)
    rng = np.random.default_rng(3)
    draws = [t.sample(rng, 20, 20) for _ in range(6000)]
    shifts = np.array([d.color_shift for d in draws])
    assert shifts.min() == 0 and shifts.max() == 10
    for c in range(3):
        counts = np.bincount(shifts[:, c], minlength=11)
        assert np.abs(counts - 6000 / 11).max() < 5 * math.sqrt(6000 / 11)
    assert abs(np.mean([d.color_subtract for d in draws]) - 0.5) < 5 * math.sqrt(0.25 / 6000)
    alphas = np.array([d.contrast for d in draws])
    assert 0.7 <= alphas.min() < 0.71 and 1.29 < alphas.max() <= 1.3
    assert abs(alphas.mean() - 1.0) < 5 * 0.6 / math.sqrt(12 * 6000)
    assert sorted({d.brightness for d in draws}) == list(range(-4, 5))
    assert sorted({d.smooth for d in draws}) == [0, 1, 2, 3]
    assert sorted({d.smooth_size for d in draws}) == [1, 3, 5]  # 1 + 2 * Rand(int(6 / 2))


@pytest.mark.parametrize("max_smooth,sizes", [(2, [1]), (5, [1, 3]), (7, [1, 3, 5]), (8, [1, 3, 5, 7])])
def test_smoothing_size_from_max_smooth(max_smooth, sizes):
    t = make(TRAIN, smooth_filtering=True, max_smooth=max_smooth, apply_probability=1.0)
    rng = np.random.default_rng(0)
    assert sorted({t.sample(rng, 9, 9).smooth_size for _ in range(400)}) == sizes


def test_smoothing_off_at_max_smooth_one_and_nothing_drawn_in_test():
    assert make(TRAIN, smooth_filtering=True, max_smooth=1, apply_probability=1.0) \
        .sample(np.random.default_rng(0), 9, 9).smooth is None
    t = make(TEST, apply_probability=1.0, mirror=True, **FULL)
    draws = {t.sample(np.random.default_rng(s), 9, 9) for s in range(50)}
    assert draws == {Draw()}  # no photometric step and, under the fork's fields, no TEST mirror


def test_bvlc_draw_sequence_is_unchanged():
    """Without fork fields: mirror, then the crop offsets, nothing else (the existing order)."""
    t = make(TRAIN, crop_size=4, mirror=True)
    for seed in range(30):
        rng = np.random.default_rng(seed)
        mirror = bool(rng.integers(2))
        h_off, w_off = int(rng.integers(9 - 4 + 1)), int(rng.integers(11 - 4 + 1))
        assert t.sample(np.random.default_rng(seed), 9, 11) == Draw(mirror=mirror, h_off=h_off, w_off=w_off)


def test_fork_mirror_only_in_train():
    train = make(TRAIN, mirror=True, max_color_shift=0)  # a fork field set (to its default)
    assert train.fork
    flips = [train.sample(np.random.default_rng(s), 5, 5).mirror for s in range(400)]
    assert 0.35 < np.mean(flips) < 0.65
    assert not any(make(TEST, mirror=True, max_color_shift=0).sample(np.random.default_rng(s), 5, 5).mirror
                   for s in range(100))


def test_invalid_fork_settings_name_the_layer():
    with pytest.raises(LayerError, match=r"net\.prototxt:3: layer 'data' \(ImageData\): smooth_filtering "
                                         r"needs max_smooth >= 2 \(got 1\.5"):
        make(TRAIN, smooth_filtering=True, max_smooth=1.5)
    with pytest.raises(LayerError, match=r"layer 'data' \(ImageData\): min_contrast \(1\.3\) must be <= "
                                         r"max_contrast \(0\.9\)"):
        make(TRAIN, contrast_brightness_adjustment=True, min_contrast=1.3, max_contrast=0.9)


def test_debug_params_logs_the_draws(caplog):
    t = make(TRAIN, debug_params=True, apply_probability=1.0, max_color_shift=3)
    with caplog.at_level(logging.INFO):
        t.sample(np.random.default_rng(0), 9, 9)
    assert "transform draws (debug_params)" in caplog.text and "color_shift=" in caplog.text


# -- the fork's batches: later larger images cut to the first one's size ---------------------

def test_fit_cuts_top_left_before_the_mirror(img):
    t = make(TRAIN, mirror=True, min_side=1, mean_value=MEAN)
    assert t.fits_to_first
    out = t.apply(img, Draw(mirror=True), fit=(10, 12))
    np.testing.assert_array_equal(out, finish(img[:10, :12], 0, 0, 0, True, 1.0, MEAN))
    with pytest.raises(TransformFailure, match=r"image of 13x15 is smaller than the batch's first image \(14x15\)"):
        t.apply(img, Draw(), fit=(14, 15))
    assert not make(TRAIN, min_side=1, crop_size=4).fits_to_first
    assert not make(TRAIN).fits_to_first  # BVLC refuses a batch of mixed sizes
