"""Every net of the book's repositories builds in TRAIN and TEST, and the trainable ones learn.

Nets: every ``net`` row of the corpus MANIFEST under ``longpeng2008__yousan.ai/`` and
``longpeng2008__Caffe_Long/longpeng_examples/`` (tests/data/corpus, copied unchanged from the book
author's repositories). Each test copies the net into a temporary folder, writes the lists and
images its data layers name there from the bundled mouth crops (``book_data``: label maps,
probability maps and regression targets are generated from the crops), and runs it from that
folder, as Caffe reads ``source`` relative to the current directory.

Build: ``caffelike.Net(path, phase)`` with the book's own batch sizes; the data and label tops have
the shapes the fork gives them, worked out here from the prototxt (batch, crop or new size; label
(N,) for ImageData as BVLC unless ``label_size`` > 1, (N,1,H,W) for ImageSegData/ImageProbData,
(N,label_size,1,1) for ImageRegressionData).

Training: a few solver steps on batches of the same few crops (batch size lowered, nothing else in
the net changed), then the loss of one fixed batch, taken from the net's own data layer before
training and fed again after, must have fallen.

The nets using ImageSegData, ImageProbData and ImageRegressionData run on the fork's data layers
(caffelike/layers/caffe_long_data.py); without them they fail with "unknown layer type", never skip.
No net of these two folders is one that real Caffe_Long itself refuses to build (each is checked
against the fork's sources: the Seg/Prob TEST layers without ``mirror`` draw no random number, the
TEST min_side resizes have min_side_min >= crop_size, both margin layers have their two tops).
"""
from __future__ import annotations

import csv
import pathlib
from dataclasses import dataclass

import numpy as np
import pytest

import caffelike as caffe
from caffelike.io import read_net
from caffelike.proto import caffe_pb2

from .book_data import CORPUS, LIST_LAYERS, image_size, prepare

FOLDERS = ("longpeng2008__yousan.ai/", "longpeng2008__Caffe_Long/longpeng_examples/")


@dataclass(frozen=True)
class Training:
    """A short run: batch size, solver steps, solver type and learning rate."""

    batch: int
    steps: int
    solver: str = "Adam"
    lr: float = 1e-3


@dataclass(frozen=True)
class BookNet:
    """classes: the label range of the net's lists (its classifier's outputs); train: None for a
    deploy net (an Input layer, no loss)."""

    classes: int
    train: Training | None


Y = "longpeng2008__yousan.ai/"
L = "longpeng2008__Caffe_Long/longpeng_examples/testlosses/"
NETS: dict[str, BookNet] = {
    Y + "simpleconv3/train.prototxt": BookNet(2, Training(4, 8)),
    Y + "simpleconv3/test_models/deploy.prototxt": BookNet(2, None),
    Y + "imgrec_color_ch8_6/caffe.prototxt": BookNet(2, None),
    Y + "imgrec_book_ch7/net_structure_train.prototxt": BookNet(2, Training(4, 8, lr=1e-4)),
    Y + "imgrec_book_ch4_expr/mobilenet_train.prototxt": BookNet(4, Training(4, 8)),
    Y + "imgrec_book_ch4_finegrained/ft_last_layer.prototxt": BookNet(200, Training(1, 6, lr=0.1)),
    Y + "imgrec_book_ch8/MobileSegNet160.prototxt": BookNet(3, None),
    Y + "imgrec_book_ch8/mobilenet_train_MobileSegNet160.prototxt": BookNet(3, Training(2, 16)),
    Y + "face_book_ch7_age/mobilenet_train.prototxt": BookNet(1, Training(4, 8, lr=0.05)),
    Y + "face_book_ch7_expr/mobilenet_train.prototxt": BookNet(4, Training(4, 8)),
    Y + "face_book_ch8/mobilenet_deploy.prototxt": BookNet(8, None),
    Y + "face_book_ch8/mobilenet_train.prototxt": BookNet(8, Training(2, 16, lr=5e-3)),
    Y + "photo_book_ch3/mobilenet_train.prototxt": BookNet(1, Training(2, 6)),
    Y + "modeldesign_ch4/allconv6.prototxt": BookNet(20, Training(2, 6)),
    Y + "modeldesign_ch4/allconv7_bn.prototxt": BookNet(20, Training(2, 6)),
    Y + "modeldesign_ch4/mobilenet10_train_depthwised.prototxt": BookNet(20, Training(2, 6)),
    Y + "modeldesign_ch5/nin_baseline_train.prototxt": BookNet(20, Training(2, 6)),
    Y + "modeldesign_ch7/allconv5_skip_add.prototxt": BookNet(2, Training(2, 12)),
    Y + "modeldesign_ch8/MobileDenseSegNet_MOUTH160_train.prototxt": BookNet(3, Training(2, 6)),
    L + "asoftmax/train.prototxt": BookNet(9, Training(4, 8)),
    L + "asoftmax/deploy.prototxt": BookNet(9, None),
    L + "lsoftmax/train.prototxt": BookNet(9, Training(4, 8)),
    L + "lsoftmax/deploy.prototxt": BookNet(9, None),
}
TRAINABLE = [name for name, book in NETS.items() if book.train is not None]


def test_every_book_net_is_listed() -> None:
    rows = csv.DictReader((CORPUS / "MANIFEST.tsv").open(), delimiter="\t")
    corpus = sorted(r["local_file"] for r in rows if r["kind"].startswith("net") and r["local_file"].startswith(FOLDERS))
    assert corpus == sorted(NETS)


def _phase_layers(path: pathlib.Path, phase: int) -> list[caffe_pb2.LayerParameter]:
    """The list-reading data layers the fork builds in ``phase`` (include/exclude by phase only)."""
    param, _ = read_net(path)
    chosen = []
    for layer in param.layer:
        if layer.type not in LIST_LAYERS:
            continue
        phases = {rule.phase for rule in layer.include if rule.HasField("phase")}
        if not layer.include or phase in phases:
            chosen.append(layer)
    return chosen


def _fork_top_shapes(layer: caffe_pb2.LayerParameter) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(data, label) top shapes as Caffe_Long's layer gives them, from the prototxt alone."""
    p, t = layer.image_data_param, layer.transform_param
    batch = p.batch_size
    if t.crop_size:
        h = w = t.crop_size
    elif p.new_height:
        h, w = p.new_height, p.new_width
    else:
        h, w = image_size(layer)
    data = (batch, 3 if p.is_color else 1, h, w)
    if layer.type in ("ImageSegData", "ImageProbData"):
        return data, (batch, 1, h, w)
    if layer.type == "ImageRegressionData":
        return data, (batch, p.label_size, 1, 1)
    return data, (batch,) if p.label_size <= 1 else (batch, p.label_size, 1, 1)


@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST], ids=["TRAIN", "TEST"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_book_net_builds(name: str, phase: int, tmp_path: pathlib.Path, monkeypatch) -> None:
    path = prepare(name, tmp_path, NETS[name].classes)
    monkeypatch.chdir(tmp_path)
    net = caffe.Net(str(path), phase)
    layers = _phase_layers(path, phase)
    if NETS[name].train is None:
        assert not layers and net.inputs and not any(net.blob_loss_weights.values())
        return
    assert len(layers) == 1, "one data layer per phase"
    data, label = _fork_top_shapes(layers[0])
    tops = net.top_names[layers[0].name]
    assert net.blobs[tops[0]].data.shape == data
    assert net.blobs[tops[1]].data.shape == label
    assert any(net.blob_loss_weights.values())


def _objective(net, losses: dict[str, float]) -> float:
    return float(sum(w * net.blobs[b].data.sum(dtype=np.float64) for b, w in losses.items()))


@pytest.mark.parametrize("name", TRAINABLE)
def test_book_net_loss_falls(name: str, tmp_path: pathlib.Path, monkeypatch) -> None:
    run = NETS[name].train
    path = prepare(name, tmp_path, NETS[name].classes, images=run.batch, batch_size=run.batch)
    monkeypatch.chdir(tmp_path)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text("\n".join([
        f'net: "{path.name}"', f'type: "{run.solver}"', f"base_lr: {run.lr}", "momentum: 0.9",
        "momentum2: 0.999", 'lr_policy: "fixed"', f"max_iter: {run.steps}", "display: 0",
        "test_iter: 1", "test_interval: 100000", "test_initialization: false", "snapshot: 0",
        "random_seed: 3", "solver_mode: CPU", 'snapshot_prefix: "snap"']) + "\n")
    caffe.set_mode_cpu()
    solver = caffe.get_solver(str(solver_file))
    net = solver.net
    losses = {b: w for b, w in net.blob_loss_weights.items() if w}
    data_layer = net._layer_names[0]
    assert net.layers[0].type in LIST_LAYERS
    net.forward()
    batch = {b: net.blobs[b].data.copy() for b in net.top_names[data_layer]}

    def fixed_batch_loss() -> float:
        for b, a in batch.items():
            net.blobs[b].data[...] = a
        caffe.set_random_seed(0)  # the same Dropout masks before and after
        net.forward(start=net._layer_names[1])
        return _objective(net, losses)

    before = fixed_batch_loss()
    solver.step(run.steps)
    after = fixed_batch_loss()
    assert solver.iter == run.steps
    assert np.isfinite(after) and after < 0.9 * before, (before, after)
