"""Small datasets for the book's own nets, made from the bundled mouth crops (data/mouth).

The book's nets (tests/data/corpus/longpeng2008__yousan.ai and longpeng2008__Caffe_Long) name
list files that are not public (``all_train.txt``, ``utkfacegood_val.txt``, ...). ``prepare``
copies a net into a folder and writes, under the names the net uses, the lists and images of each
of its data layers, so that the net runs unchanged from that folder (Caffe reads ``source`` and
``root_folder`` relative to the current directory):

- ``ImageData``: ``image label`` lines, labels the mouth classes (0 neutral, 1 smile);
- ``ImageSegData``: ``image labelmap`` lines; the label map is the mouth crop's grey level cut
  into the net's classes at its quantiles, with a 2-pixel 255 (ignore) border (the label maps of
  the face-segmentation example, ``models/face_seg/make_data.py``);
- ``ImageProbData``: ``image probmap`` lines; the map is the inverted, blurred grey level
  (dark lips -> high probability), which the layer scales by 0.0039 as the fork does;
- ``ImageRegressionData``: ``image v1 .. vK`` lines (``label_size`` floats), an "age" of
  20 + 10 * class + the crop's mean grey level / 64.

Images are resized to one size per layer, since the fork shapes a batch by its first image: the
layer's ``new_height`` x ``new_width`` where it has one (its resize is then an identity, so that
label maps are not blended: the fork resizes them bilinearly too), 64 x 64 where ``min_side_min``
resizes them, else ``crop_size`` + 8 square (at least 64). Nothing here changes a net's layers; ``prepare`` may only lower ``batch_size``.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re
import shutil
from dataclasses import dataclass

import cv2
import numpy as np

from caffelike.io import read_net
from caffelike.proto import caffe_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
MOUTH = ROOT / "data" / "mouth"
CORPUS = ROOT / "tests" / "data" / "corpus"
LIST_LAYERS = ("ImageData", "ImageSegData", "ImageProbData", "ImageRegressionData")


@dataclass(frozen=True)
class Crop:
    """One mouth crop: BGR pixels and its class (0 neutral, 1 smile)."""

    image: np.ndarray
    label: int


def mouth_crops(count: int) -> list[Crop]:
    """The first ``count`` crops of data/mouth/train.txt, alternating the two classes."""
    by_class: dict[int, list[str]] = {0: [], 1: []}
    for line in (MOUTH / "train.txt").read_text().split("\n"):
        if line.strip():
            name, label = line.split()
            by_class[int(label)].append(name)
    names = [by_class[i % 2][i // 2] for i in range(count)]
    return [Crop(cv2.imread(str(MOUTH / n), cv2.IMREAD_COLOR), int(n.split("/")[0])) for n in names]


def image_size(layer: caffe_pb2.LayerParameter) -> tuple[int, int]:
    """(height, width) of the images written for one data layer."""
    p, t = layer.image_data_param, layer.transform_param
    if p.new_height:  # the layer's resize is then an identity: label maps stay unblended
        return p.new_height, p.new_width
    if t.min_side_min:
        return 64, 64
    side = max(64, t.crop_size + 8)
    return side, side


def _face_seg_data():
    """models/face_seg/make_data.py, whose label maps these are too."""
    spec = importlib.util.spec_from_file_location("face_seg_make_data", ROOT / "models" / "face_seg" / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seg_map = _face_seg_data().label_map


def prob_map(image: np.ndarray) -> np.ndarray:
    """A probability map (0..255) from the crop: the inverted grey level, blurred."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.GaussianBlur(255 - grey, (0, 0), 2.0)


def write_list(layer: caffe_pb2.LayerParameter, folder: pathlib.Path, crops: list[Crop], classes: int) -> None:
    """The list file and images (and label maps) of one list-reading data layer."""
    p = layer.image_data_param
    height, width = image_size(layer)
    root = folder / p.root_folder
    stem = re.sub(r"\W", "_", p.source)
    lines = []
    for i, crop in enumerate(crops):
        image = cv2.resize(crop.image, (width, height), interpolation=cv2.INTER_LINEAR)
        name = f"{stem}/{i}.png"
        (root / stem).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), image)
        if layer.type == "ImageData":
            extra = " ".join([str(crop.label)] * max(1, p.label_size))
        elif layer.type == "ImageRegressionData":
            age = 20 + 10 * crop.label + float(image.mean()) / 64
            extra = " ".join(f"{age + j:.3f}" for j in range(max(1, p.label_size)))
        else:
            extra = f"{stem}/{i}_label.png"
            label = seg_map(image, classes) if layer.type == "ImageSegData" else prob_map(image)
            cv2.imwrite(str(root / extra), label)
        lines.append(f"{name} {extra}")
    target = folder / p.source
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")


def prepare(net: str | pathlib.Path, folder: pathlib.Path, classes: int, images: int = 8,
            batch_size: int | None = None) -> pathlib.Path:
    """Copy the net ``net`` (a corpus path, or a Path) into ``folder`` with data for its list
    layers; the copy's path.

    ``batch_size`` (when given) lowers every ``batch_size`` of the copy; nothing else changes.
    """
    source = net if isinstance(net, pathlib.Path) else CORPUS / net
    copy = folder / source.name
    folder.mkdir(parents=True, exist_ok=True)
    if batch_size is None:
        shutil.copyfile(source, copy)
    else:
        text = source.read_text()
        text = re.sub(r"batch_size:\s*(\d+)", lambda m: f"batch_size: {min(int(m.group(1)), batch_size)}", text)
        copy.write_text(text)
    crops = mouth_crops(images)
    param, _ = read_net(copy)
    for layer in param.layer:
        if layer.type in LIST_LAYERS:
            write_list(layer, folder, crops, classes)
    return copy
