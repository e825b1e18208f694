"""The py-faster-rcnn corpus nets (rbgirshick/py-faster-rcnn, on rbgirshick/caffe-fast-rcnn), issue 16.

* Every net builds in TEST, or fails only because a Python layer's module (py-faster-rcnn's
  ``lib/``) is not importable, as real Caffe would, with an error naming the module.
* With a small stand-in ``rpn.proposal_layer`` on sys.path, the ZF end-to-end test net runs.
* fast_rcnn/test.prototxt runs forward on generated weights with given ROIs.
* A Faster R-CNN-style net (conv + ROIPooling + fc + SmoothL1Loss + SoftmaxWithLoss, fed by a
  tiny Python data layer) trains through ``caffelike train`` with a falling loss.

ROI pooling is checked against :func:`fork_roi_pool`, the loops of the fork's
roi_pooling_layer.cpp written out in numpy (not caffelike's code).
"""
from __future__ import annotations

import math
import pathlib
import re
import sys
import textwrap

import numpy as np
import pytest
import torch

import caffelike
from caffelike.errors import LayerError

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "data" / "corpus" / "rbgirshick__py-faster-rcnn" / "models"
NETS = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "solver.prototxt")
PASCAL = CORPUS / "pascal_voc"

# the first Python layer module each net needs in TEST (None: the net has none)
MISSING_MODULE = {
    "ZF/faster_rcnn_alt_opt/rpn_test.pt": "rpn.proposal_layer",
    "VGG16/fast_rcnn/test.prototxt": None,
    **{f"{arch}/faster_rcnn_end2end/{phase}.prototxt": module
       for arch in ("VGG16", "ZF", "VGG_CNN_M_1024")
       for phase, module in (("test", "rpn.proposal_layer"), ("train", "roi_data_layer.layer"))},
}

PROPOSAL_STANDIN = '''
"""A stand-in for py-faster-rcnn's rpn.proposal_layer (tests only): boxes of 2 x feat_stride
pixels around the top-scoring foreground positions, clipped to the image."""
import ast

import caffelike as caffe
import numpy as np


class ProposalLayer(caffe.Layer):
    def setup(self, bottom, top):
        self.feat_stride = ast.literal_eval("{" + self.param_str + "}")["feat_stride"]
        top[0].reshape(1, 5)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        scores = bottom[0].data[0, bottom[0].data.shape[1] // 2:].max(axis=0)
        height, width = bottom[2].data[0, :2]
        order = np.argsort(-scores, axis=None, kind="stable")[:4]
        ys, xs = np.unravel_index(order, scores.shape)
        s = self.feat_stride
        boxes = np.stack([np.zeros(len(xs)), np.clip((xs - 1) * s, 0, width - 1), np.clip((ys - 1) * s, 0, height - 1),
                          np.clip((xs + 1) * s, 0, width - 1), np.clip((ys + 1) * s, 0, height - 1)], axis=1)
        top[0].reshape(*boxes.shape)
        top[0].data[...] = boxes

    def backward(self, top, propagate_down, bottom):
        pass
'''


def fork_roi_pool(feat: np.ndarray, rois: np.ndarray, scale: float, pooled_h: int, pooled_w: int) -> np.ndarray:
    """roi_pooling_layer.cpp's Forward_cpu, loop for loop (C rounding of the scaled corners)."""
    def c_round(v: float) -> int:
        return int(math.copysign(math.floor(abs(v) + 0.5), v))

    _, channels, height, width = feat.shape
    out = np.zeros((len(rois), channels, pooled_h, pooled_w), np.float32)
    f32 = np.float32
    for n, (b, x1, y1, x2, y2) in enumerate(rois):
        start_w, start_h = c_round(f32(x1) * f32(scale)), c_round(f32(y1) * f32(scale))
        end_w, end_h = c_round(f32(x2) * f32(scale)), c_round(f32(y2) * f32(scale))
        bin_h = f32(max(end_h - start_h + 1, 1)) / f32(pooled_h)
        bin_w = f32(max(end_w - start_w + 1, 1)) / f32(pooled_w)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                hs = min(max(int(math.floor(f32(ph) * bin_h)) + start_h, 0), height)
                he = min(max(int(math.ceil(f32(ph + 1) * bin_h)) + start_h, 0), height)
                ws = min(max(int(math.floor(f32(pw) * bin_w)) + start_w, 0), width)
                we = min(max(int(math.ceil(f32(pw + 1) * bin_w)) + start_w, 0), width)
                if he > hs and we > ws:
                    out[n, :, ph, pw] = feat[int(b), :, hs:he, ws:we].max(axis=(1, 2))
    return out


@pytest.fixture
def module_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    """tmp_path on sys.path for the stand-in modules, which are forgotten afterwards (so later
    tests see py-faster-rcnn's modules missing again)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.split(".")[0] in ("rpn", "tiny_roi_data")]:
        del sys.modules[name]


def _random_weights(net: caffelike.Net, seed: int, period: int = 1_000_003) -> None:
    """Gaussian weights scaled by 1/sqrt(fan-in); a blob past ``period`` values repeats its
    first ``period`` (a prime: no row lines up with the repeat), to keep VGG16's fc6 cheap."""
    generator = torch.Generator().manual_seed(seed)
    for blobs in net.params.values():
        for blob in blobs:
            fan = max(1, int(np.prod(blob.data.shape[1:])))
            flat = torch.from_numpy(blob.data).view(-1)
            base = torch.empty(min(flat.numel(), period)).normal_(0.0, 1.5 / math.sqrt(fan), generator=generator)
            for start in range(0, flat.numel(), period):
                flat[start:start + period] = base[:flat.numel() - start]


@pytest.mark.parametrize("path", NETS, ids=lambda p: str(p.relative_to(PASCAL)))
def test_corpus_net_builds_or_names_the_missing_module(path: pathlib.Path) -> None:
    module = MISSING_MODULE[str(path.relative_to(PASCAL))]
    if module is None:
        net = caffelike.Net(str(path), caffelike.TEST, fill=False)
        assert "roi_pool5" in net.layer_dict
        return
    with pytest.raises(LayerError) as info:
        caffelike.Net(str(path), caffelike.TEST, fill=False)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert f"(Python): cannot import Python layer module '{module}'" in message


def test_fast_rcnn_vgg16_forward_with_given_rois() -> None:
    net = caffelike.Net(str(PASCAL / "VGG16" / "fast_rcnn" / "test.prototxt"), caffelike.TEST, fill=False)
    _random_weights(net, 0)
    rois = np.array([[0, 0, 0, 63, 47], [0, 10, 5, 60, 40], [0, 32, 16, 40, 30], [0, 50, 40, 40, 30]], np.float32)
    net.blobs["data"].reshape(1, 3, 48, 64)
    net.blobs["rois"].reshape(*rois.shape)
    net.reshape()
    x = np.random.default_rng(1).normal(size=(1, 3, 48, 64)).astype(np.float32)
    out = net.forward(data=x, rois=rois)
    assert out["cls_prob"].shape == (4, 21) and out["bbox_pred"].shape == (4, 84)
    np.testing.assert_allclose(out["cls_prob"].sum(axis=1), 1, rtol=1e-5)
    expected = fork_roi_pool(net.blobs["conv5_3"].data, rois, 0.0625, 7, 7)
    np.testing.assert_array_equal(net.blobs["pool5"].data, expected)
    assert np.ptp(out["cls_prob"], axis=0).max() > 0  # the ROIs give different answers


def test_zf_end2end_test_net_runs_with_a_proposal_module(module_dir: pathlib.Path) -> None:
    (module_dir / "rpn").mkdir()
    (module_dir / "rpn" / "__init__.py").write_text("")
    (module_dir / "rpn" / "proposal_layer.py").write_text(PROPOSAL_STANDIN)
    net = caffelike.Net(str(PASCAL / "ZF" / "faster_rcnn_end2end" / "test.prototxt"), caffelike.TEST, fill=False)
    _random_weights(net, 2)
    net.blobs["data"].reshape(1, 3, 96, 128)
    net.reshape()
    x = np.random.default_rng(3).normal(size=(1, 3, 96, 128)).astype(np.float32)
    out = net.forward(data=x, im_info=np.array([[96, 128, 1]], np.float32))
    rois = np.array(net.blobs["rois"].data)
    assert rois.shape == (4, 5)
    assert out["cls_prob"].shape == (4, 21) and out["bbox_pred"].shape == (4, 84)
    np.testing.assert_allclose(out["cls_prob"].sum(axis=1), 1, rtol=1e-5)
    expected = fork_roi_pool(net.blobs["conv5"].data, rois, 0.0625, 6, 6)
    np.testing.assert_array_equal(net.blobs["roi_pool_conv5"].data, expected)


ROI_DATA = '''
"""A tiny ROI data layer (tests only): 4 generated images with 6 ROIs each; a ROI's class is 1
when its box holds the bright square; its box targets hold the offset to that square."""
import caffelike as caffe
import numpy as np


class TinyRoiData(caffe.Layer):
    def setup(self, bottom, top):
        rng = np.random.default_rng(0)
        self.samples = []
        for _ in range(4):
            image = rng.normal(scale=0.1, size=(1, 3, 24, 24)).astype(np.float32)
            y, x = rng.integers(2, 14, size=2)
            image[0, :, y:y + 8, x:x + 8] += 1.0
            rois, labels, targets = [], [], []
            for k in range(6):
                if k % 2 == 0:
                    dy, dx = rng.integers(-2, 3, size=2)
                    box = (x + dx, y + dy, x + dx + 7, y + dy + 7)
                    labels.append(1)
                    targets.append([1.0 - dx / 4, 0.5 - dy / 4, -0.5, 1.0])
                else:
                    bx, by = (0, 16) if x > 8 else (16, 0)
                    box = (bx, by, bx + 7, by + 7)
                    labels.append(0)
                    targets.append([0, 0, 0, 0])
                rois.append((0,) + tuple(int(v) for v in box))
            targets = np.array(targets, np.float32)
            weights = np.repeat(np.array(labels, np.float32)[:, None], 4, axis=1)
            self.samples.append((image, np.array(rois, np.float32), np.array(labels, np.float32),
                                 targets, weights, weights))
        self.index = 0
        for blob, array in zip(top, self.samples[0]):
            blob.reshape(*array.shape)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        for blob, array in zip(top, self.samples[self.index % len(self.samples)]):
            blob.data[...] = array
        self.index += 1

    def backward(self, top, propagate_down, bottom):
        pass
'''

TRAIN_NET = """name: "tiny_faster_rcnn"
layer { name: "data" type: "Python" top: "data" top: "rois" top: "labels" top: "bbox_targets"
  top: "bbox_inside_weights" top: "bbox_outside_weights"
  python_param { module: "tiny_roi_data" layer: "TinyRoiData" } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "roi_pool" type: "ROIPooling" bottom: "conv1" bottom: "rois" top: "roi_pool"
  roi_pooling_param { pooled_h: 3 pooled_w: 3 spatial_scale: 1 } }
layer { name: "fc6" type: "InnerProduct" bottom: "roi_pool" top: "fc6"
  inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "cls_score" type: "InnerProduct" bottom: "fc6" top: "cls_score"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "bbox_pred" type: "InnerProduct" bottom: "fc6" top: "bbox_pred"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss_cls" type: "SoftmaxWithLoss" bottom: "cls_score" bottom: "labels" top: "loss_cls" }
layer { name: "loss_bbox" type: "SmoothL1Loss" bottom: "bbox_pred" bottom: "bbox_targets"
  bottom: "bbox_inside_weights" bottom: "bbox_outside_weights" top: "loss_bbox"
  smooth_l1_loss_param { sigma: 1 } }
"""

SOLVER = """net: "train.prototxt"
base_lr: 0.05
momentum: 0.9
lr_policy: "fixed"
max_iter: 60
display: 10
average_loss: 4
snapshot_after_train: false
random_seed: 1
"""

DISPLAY = re.compile(r"\] Iteration (\d+) \(.*\), loss = (\S+)$")
BBOX_OUTPUT = re.compile(r"\]     Train net output #\d+: loss_bbox = (\S+)")


def test_faster_rcnn_style_net_trains(module_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from caffelike.cli import main

    tmp_path = module_dir
    (tmp_path / "tiny_roi_data.py").write_text(textwrap.dedent(ROI_DATA))
    (tmp_path / "train.prototxt").write_text(TRAIN_NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GLOG_logtostderr", raising=False)
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    assert main(["train", "-solver", "solver.prototxt", "-log_dir", str(tmp_path / "logs")]) == 0
    (log,) = [p for p in (tmp_path / "logs").glob("caffelike.*.log.INFO.*") if not p.is_symlink()]
    lines = log.read_text().splitlines()
    losses = {int(m.group(1)): float(m.group(2)) for line in lines if (m := DISPLAY.search(line))}
    assert sorted(losses) == [0, 10, 20, 30, 40, 50]
    assert losses[50] < 0.5 * losses[0], losses
    bbox = [float(m.group(1)) for line in lines if (m := BBOX_OUTPUT.search(line))]
    assert len(bbox) == 6 and bbox[-1] < 0.5 * bbox[0], bbox
