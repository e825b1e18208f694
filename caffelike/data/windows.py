"""R-CNN window files and the window crops of Caffe's WindowData layer.

A window file repeats, per image::

    # <image index>
    <image path>            (prefixed with root_folder as a plain string)
    <channels>
    <height>
    <width>
    <number of windows>
    <class> <overlap> <x1> <y1> <x2> <y2>     (one line per window; inclusive pixel box)

Windows with ``overlap >= fg_threshold`` are foreground (class must be > 0); those with
``overlap < bg_threshold`` are background (class 0); the rest are unused.
The crop arithmetic follows Caffe's window_data_layer.cpp, in float32 with C's ``round``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import DataError, Where
from ..io.where import source_where
from .paths import strict_path_error


@dataclass(frozen=True)
class Window:
    """One box of one image: class, overlap and inclusive corners."""

    image: int
    label: int
    overlap: float
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass
class WindowFile:
    """Parsed window file: image paths, foreground and background windows."""

    images: list[str]
    channels: list[int]
    foreground: list[Window]
    background: list[Window]


def read_window_file(source: str, root_folder: str, fg_threshold: float, bg_threshold: float,
                     where: Where | None = None) -> WindowFile:
    """Parse ``source``; every malformed line is a DataError naming file and line."""

    def error(message: str, line: int | None) -> DataError:
        return DataError(message, source_where(where, source, line))

    try:
        with open(source, encoding="utf-8") as handle:
            lines = [(i, ln.strip()) for i, ln in enumerate(handle.read().splitlines(), 1)]
    except OSError as exc:
        raise error(f"cannot open window file '{source}': {exc.strerror}", None) from None
    lines = [(i, ln) for i, ln in lines if ln]
    if not lines:
        raise error("window file is empty", None)
    out = WindowFile([], [], [], [])
    pos = 0

    def take(what: str) -> tuple[int, str]:
        nonlocal pos
        if pos >= len(lines):
            raise error(f"file ends where {what} was expected", lines[-1][0])
        pos += 1
        return lines[pos - 1]

    def ints(what: str, count: int) -> tuple[int, list[int]]:
        line, text = take(what)
        try:
            values = [int(v) for v in text.split()]
        except ValueError:
            values = []
        if len(values) != count:
            raise error(f"expected {what}, got '{text}'", line)
        return line, values

    while pos < len(lines):
        line, text = take("'# <image index>'")
        parts = text.split()
        if len(parts) != 2 or parts[0] != "#" or not parts[1].lstrip("-").isdigit():
            raise error(f"expected '# <image index>', got '{text}'", line)
        image = len(out.images)
        path_line, path = take("an image path")
        refusal = strict_path_error(root_folder, path)
        if refusal:
            raise error(refusal, path_line)
        out.images.append(root_folder + path)
        _, (channels,) = ints("the channel count", 1)
        ints("the image height", 1)
        ints("the image width", 1)
        out.channels.append(channels)
        _, (count,) = ints("the number of windows", 1)
        for _ in range(count):
            line, text = take("a window line")
            fields = text.split()
            try:
                label, overlap = int(fields[0]), float(fields[1])
                x1, y1, x2, y2 = (int(v) for v in fields[2:6])
                if len(fields) != 6:
                    raise ValueError
            except (ValueError, IndexError):
                raise error(f"expected '<class> <overlap> <x1> <y1> <x2> <y2>', got '{text}'",
                            line) from None
            if overlap >= fg_threshold:
                if label <= 0:
                    raise error(f"foreground window (overlap {overlap} >= fg_threshold) has "
                                f"class {label}; foreground classes must be > 0", line)
                out.foreground.append(Window(image, label, overlap, x1, y1, x2, y2))
            elif overlap < bg_threshold:
                out.background.append(Window(image, 0, 0.0, x1, y1, x2, y2))
    if not out.foreground or not out.background:
        raise error(f"needs foreground and background windows, has {len(out.foreground)} and "
                    f"{len(out.background)} (fg_threshold {fg_threshold}, bg_threshold "
                    f"{bg_threshold})", None)
    return out


def _c_round(x: float) -> int:
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def crop_window(img: np.ndarray, win: Window, crop: int, context_pad: int, square: bool,
                mirror: bool, scale: float, mean_values: np.ndarray | None,
                mean_file: np.ndarray | None) -> np.ndarray:
    """Caffe's WindowData crop of one window: float32 ``(C, crop, crop)``, zero outside the
    warped window (``mean_file`` is ``(C, H, W)``, centred on the crop)."""
    f32 = np.float32
    x1, y1, x2, y2 = win.x1, win.y1, win.x2, win.y2
    size_w = size_h = crop
    pad_w = pad_h = 0
    if context_pad > 0 or square:
        context_scale = f32(crop) / f32(crop - 2 * context_pad)
        half_h, half_w = f32(y2 - y1 + 1) / f32(2.0), f32(x2 - x1 + 1) / f32(2.0)
        cx, cy = f32(x1) + half_w, f32(y1) + half_h
        if square:
            half_h = half_w = max(half_h, half_w)
        x1, x2 = _c_round(cx - half_w * context_scale), _c_round(cx + half_w * context_scale)
        y1, y2 = _c_round(cy - half_h * context_scale), _c_round(cy + half_h * context_scale)
        unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
        px1, py1 = max(0, -x1), max(0, -y1)
        px2, py2 = max(0, x2 - img.shape[1] + 1), max(0, y2 - img.shape[0] + 1)
        x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
        sx, sy = f32(crop) / f32(unclipped_w), f32(crop) / f32(unclipped_h)
        size_w = _c_round(f32(x2 - x1 + 1) * sx)
        size_h = _c_round(f32(y2 - y1 + 1) * sy)
        px1, px2 = _c_round(f32(px1) * sx), _c_round(f32(px2) * sx)
        py1 = _c_round(f32(py1) * sy)
        pad_h, pad_w = py1, (px2 if mirror else px1)
        size_h = min(size_h, crop - pad_h)
        size_w = min(size_w, crop - pad_w)
    if not (0 <= x1 <= x2 < img.shape[1] and 0 <= y1 <= y2 < img.shape[0]):
        raise ValueError(f"window ({win.x1}, {win.y1}, {win.x2}, {win.y2}) lies outside the "
                         f"{img.shape[0]}x{img.shape[1]} image")
    patch = cv2.resize(img[y1:y2 + 1, x1:x2 + 1], (size_w, size_h), interpolation=cv2.INTER_LINEAR)
    if patch.ndim == 2:
        patch = patch[:, :, None]
    if mirror:
        patch = patch[:, ::-1]
    channels = patch.shape[2]
    values = patch.astype(np.float32).transpose(2, 0, 1)
    if mean_file is not None:
        off = (mean_file.shape[2] - crop) // 2
        values = values - mean_file[:, off + pad_h:off + pad_h + size_h, off + pad_w:off + pad_w + size_w]
    elif mean_values is not None and mean_values.size:
        values = values - mean_values.reshape(-1, 1, 1)
    out = np.zeros((channels, crop, crop), np.float32)
    out[:, pad_h:pad_h + size_h, pad_w:pad_w + size_w] = values * f32(scale)
    return out
