"""A SegNet-style net trains through ``caffelike train`` (issue 16): DenseImageData on a few
generated image/label pairs, Convolution + BN (LEARN) + ReLU, MAX pooling with its mask,
Upsample with that mask, and SoftmaxWithLoss with SegNet's class weighting. The loss falls."""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from caffelike.cli import main
from caffelike.solver.messages import ITERATION_LOSS

BN = 'bn_param { scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0 } }'
CONV = 'convolution_param {{ num_output: {n} kernel_size: 3 pad: 1 weight_filler {{ type: "msra" }} }}'
NET = f"""name: "mini_segnet"
layer {{ name: "data" type: "DenseImageData" top: "data" top: "label"
  transform_param {{ mean_value: 128 scale: 0.0078125 }}
  dense_image_data_param {{ source: "{{source}}" batch_size: 4 shuffle: true mirror: true }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1" {CONV.format(n=8)} }}
layer {{ name: "bn1" type: "BN" bottom: "conv1" top: "conv1" {BN} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" {CONV.format(n=8)} }}
layer {{ name: "bn2" type: "BN" bottom: "conv2" top: "conv2" {BN} }}
layer {{ name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }}
layer {{ name: "upsample1" type: "Upsample" bottom: "conv2" bottom: "pool1_mask" top: "up1"
  upsample_param {{ scale: 2 }} }}
layer {{ name: "conv3" type: "Convolution" bottom: "up1" top: "conv3" {CONV.format(n=3)} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "conv3" bottom: "label" top: "loss"
  loss_param {{ weight_by_label_freqs: true class_weighting: 1 class_weighting: 1.5 class_weighting: 2 }} }}
"""
SOLVER = """net: "{net}"
base_lr: 0.1
momentum: 0.9
lr_policy: "fixed"
max_iter: 30
display: 5
random_seed: 1
snapshot_prefix: "{prefix}"
solver_mode: CPU
"""


def _data(tmp: pathlib.Path, n: int = 8) -> pathlib.Path:
    """Images whose label is how many of blue and green exceed 127 (0, 1 or 2) at each pixel."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        img = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (16, 16), interpolation=cv2.INTER_NEAREST)
        label = (img[:, :, 0] > 127).astype(np.uint8) + (img[:, :, 1] > 127)
        cv2.imwrite(str(tmp / f"{i}.png"), img)
        cv2.imwrite(str(tmp / f"{i}_l.png"), label)
        lines.append(f"{tmp / f'{i}.png'} {tmp / f'{i}_l.png'}")
    (tmp / "train.txt").write_text("\n".join(lines) + "\n")
    return tmp / "train.txt"


def test_segnet_style_training_lowers_the_loss(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    net = tmp_path / "net.prototxt"
    net.write_text(NET.replace("{source}", str(_data(tmp_path))))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=net, prefix=tmp_path / "snap"))
    assert main(["train", f"--solver={solver}"]) == 0
    err = capsys.readouterr().err
    losses = [float(m.group(3)) for m in ITERATION_LOSS.finditer(err)]
    assert len(losses) >= 5, err[-3000:]
    assert losses[-1] < 0.7 * losses[0], losses
