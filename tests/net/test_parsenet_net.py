"""ParseNet's corpus net and solver (natanielruiz/net-archive, on weiliu89/caffe branch fcn), issue 16.

* The TEST net is read as far as the fork's own Caffe reads it: it stops at its missing LMDB
  (the Data layer's error) once NormalizeParameter (SSD slice) holds the fcn branch's
  ``fix_scale``; until then at that Normalize field.
* The solver, with ParseNet's ``eval_type``, parses.
* The TEST net with Input layers in place of its LMDB Data layers runs forward on generated
  weights: bins pooling, UnPooling, the bilinear_upsampling deconvolution, ParseOutput and
  ParseEvaluate, checked against what the fork's sources compute (numpy here).
* A ParseNet-style global-context branch (bin pooling, UnPooling) trains with a falling loss.
"""
from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest
from google.protobuf import text_format

import caffelike
from caffelike.errors import CaffelikeError, DataError, PrototxtError
from caffelike.layers import LAYERS
from caffelike.proto import caffe_pb2

HERE = pathlib.Path(__file__).resolve().parents[1] / "data" / "corpus" / "natanielruiz__net-archive" / "parsenet"
NET = HERE / "VGG_VOC2012ext.prototxt"
SOLVER = HERE / "VGG_VOC2012ext_solver.prototxt"
SIZE = 48  # fc7 is 6 x 6: bin_size 1 needs at least 2


def test_test_net_stops_where_the_fork_would(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the LMDBs do not exist here, as for Caffe
    with pytest.raises(CaffelikeError) as info:
        caffelike.Net(str(NET), caffelike.TEST)
    message = str(info.value)
    # as the fork's Caffe: at the first Data layer's LMDB
    assert isinstance(info.value, DataError), message
    assert "layer 'data' (Data)" in message and "cannot open LMDB" in message, message


def test_solver_parses_with_eval_type() -> None:
    solver = text_format.Parse(SOLVER.read_text(), caffe_pb2.SolverParameter())
    assert solver.eval_type == "segmentation"
    assert caffe_pb2.SolverParameter().eval_type == "classification"


def _runnable_test_net() -> str:
    """The corpus net with Input layers for its TEST Data layers."""
    net = text_format.Parse(NET.read_text(), caffe_pb2.NetParameter())
    for layer in net.layer:
        if layer.type == "Data" and layer.include[0].phase == caffe_pb2.TEST:
            channels = 3 if layer.name == "data" else 1
            layer.ClearField("data_param")
            layer.ClearField("transform_param")
            layer.type = "Input"
            layer.input_param.shape.add().dim.extend([1, channels, SIZE, SIZE])
    return text_format.MessageToString(net)


def test_test_net_runs_forward(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "parsenet_test.prototxt"
    path.write_text(_runnable_test_net())
    net = caffelike.Net(str(path), caffelike.TEST)
    rng = np.random.default_rng(0)
    for name, blobs in net.params.items():
        if name != "upscore21":  # keep its bilinear_upsampling weights
            weights, *bias = blobs
            weights.data[...] = rng.normal(scale=np.sqrt(2.0 / weights.data[0].size), size=weights.data.shape)
            for blob in bias:
                blob.data[...] = 0
    image = rng.normal(scale=50, size=(1, 3, SIZE, SIZE)).astype(np.float32)
    label = rng.integers(0, 21, size=(1, 1, SIZE, SIZE)).astype(np.float32)
    label[0, 0, :5] = 255
    net.forward(data=image, label=label)
    b = {k: np.array(v.data) for k, v in net.blobs.items()}

    # bins pooling (bin_size 1: the mean of fc7) and the UnPooling repeat over fc7's map
    np.testing.assert_allclose(b["pool6_1x1"], b["fc7"].mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    assert b["pool6_1x1_norm_upscore21"].shape == (1, 21, 6, 6)
    np.testing.assert_array_equal(b["pool6_1x1_norm_upscore21"],
                                  np.broadcast_to(b["pool6_1x1_norm_score21"], (1, 21, 6, 6)))
    # the deconvolution's fork filler: K = 16, f = 8, c = 15/16 (filler.hpp of the fcn branch)
    row = 1 - np.abs(np.arange(16) / 8 - 15 / 16)
    np.testing.assert_allclose(np.array(net.params["upscore21"][0].data)[3, 0], np.outer(row, row), rtol=1e-6)
    assert b["score"].shape == (1, 21, SIZE, SIZE)
    # ParseOutput: the first channel holding the maximum
    np.testing.assert_array_equal(b["predlabel"], b["score"].argmax(axis=1)[:, None].astype(np.float32))
    # ParseEvaluate: per label (right, labelled, predicted), label 255 ignored
    keep = label.ravel() != 255
    gt, pred = label.ravel()[keep].astype(int), b["predlabel"].ravel()[keep].astype(int)
    expected = np.stack([np.bincount(gt[gt == pred], minlength=21), np.bincount(gt, minlength=21),
                         np.bincount(pred, minlength=21)], axis=1)
    np.testing.assert_array_equal(b["evaluation"].reshape(21, 3), expected)
    assert net.outputs == ["evaluation"]


TRAIN_NET = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } shape { dim: 2 dim: 1 dim: 6 dim: 6 }
                           data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "local" type: "Convolution" bottom: "data" top: "local"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "pool" type: "Pooling" bottom: "local" top: "pool" pooling_param { pool: AVE bin_size: 1 } }
layer { name: "global" type: "Convolution" bottom: "pool" top: "global"
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "unpool" type: "UnPooling" bottom: "global" bottom: "local" top: "unpool"
        unpooling_param { unpool: REP out_kernel_size: 0 out_stride: 0 } }
layer { name: "score" type: "Eltwise" bottom: "unpool" bottom: "local" top: "score" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


def test_parsenet_style_context_branch_trains(tmp_path: pathlib.Path) -> None:
    """Global context as ParseNet adds it (bin pooling, a 1x1 convolution, UnPooling back over the
    map, summed with the local scores) trains: the loss falls and the context branch learns."""
    (tmp_path / "net.prototxt").write_text(TRAIN_NET)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
                           'momentum: 0.9\nmax_iter: 30\nsnapshot_after_train: false\n')
    solver = caffelike.get_solver(str(solver_file))
    before = np.array(solver.net.params["global"][0].data).copy()
    solver.step(1)
    first = float(solver.net.blobs["loss"].data)
    solver.step(29)
    assert float(solver.net.blobs["loss"].data) < 0.5 * first
    assert not np.allclose(np.array(solver.net.params["global"][0].data), before)
