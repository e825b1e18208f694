"""The slice's fork layers with a backward in their fork (Axpy, ShuffleChannel,
ConvolutionDepthwise) train through caffelike's solver: an SE/ShuffleNet-style block learns a
fixed small problem and its loss falls (issue 16, item 4)."""
from __future__ import annotations

import pathlib

import numpy as np

import caffelike

NET = """name: "se_shuffle"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 8 dim: 4 dim: 6 dim: 6 } shape { dim: 8 } } }
layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "dw" top: "shuffle" shuffle_channel_param { group: 2 } }
layer { name: "pw" type: "Convolution" bottom: "shuffle" top: "pw"
  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "msra" } } }
layer { name: "squeeze" type: "Pooling" bottom: "pw" top: "squeeze" pooling_param { pool: AVE global_pooling: true } }
layer { name: "excite" type: "InnerProduct" bottom: "squeeze" top: "excite"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "gate" type: "Sigmoid" bottom: "excite" top: "gate" }
layer { name: "gate4d" type: "Reshape" bottom: "gate" top: "gate4d" reshape_param { shape { dim: 0 dim: 0 dim: 1 dim: 1 } } }
layer { name: "axpy" type: "Axpy" bottom: "gate4d" bottom: "pw" bottom: "data" top: "axpy" }
layer { name: "pool" type: "Pooling" bottom: "axpy" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""

SOLVER = """net: "net.prototxt"
base_lr: 0.05
lr_policy: "fixed"
momentum: 0.9
max_iter: 60
display: 0
snapshot_after_train: false
random_seed: 1
solver_mode: CPU
"""


def test_se_shuffle_block_trains(tmp_path: pathlib.Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    rng = np.random.default_rng(0)
    label = np.arange(8) % 3
    x = rng.normal(scale=0.5, size=(8, 4, 6, 6)).astype(np.float32)
    x += label[:, None, None, None].astype(np.float32)  # class shifts the mean: learnable
    solver = caffelike.SGDSolver("solver.prototxt")
    net = solver.net
    losses = []
    for _ in range(60):
        net.blobs["data"].data[...] = x
        net.blobs["label"].data[...] = label
        solver.step(1)
        losses.append(float(np.array(net.blobs["loss"].data)))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses
    for name in ("dw", "excite"):  # the gradient reached the layers below ShuffleChannel and Axpy
        assert np.abs(np.array(net.params[name][0].diff)).sum() > 0
