"""fuse_batchnorm_scale in training: a real Caffe run (tests/golden/solvers/sgd_step) reproduced.

Expected values: the snapshot real Caffe wrote after 40 SGD iterations of the case's BatchNorm
+ in-place Scale net (golden README: whole runs compare at rtol ~1e-3).
"""
from __future__ import annotations

import shutil

import numpy as np

import caffelike
from caffelike.io import load_weights
from caffelike.layers.normalization import FusedBatchNormScale
from caffelike.net.fold import InPlaceActivation, PassThrough, fuse_batchnorm_scale

from .golden_nets import GOLDEN, assert_close_scaled, golden_net

CASE = GOLDEN.parent / "solvers" / "sgd_step"


def test_fused_training_run_matches_caffe_snapshot(tmp_path, monkeypatch):
    work = tmp_path / "sgd_step"
    shutil.copytree(CASE, work, ignore=shutil.ignore_patterns("snapshots", "*.npz", "*.json", "log.txt"))
    (work / "snapshots").mkdir()
    monkeypatch.chdir(work)
    solver = caffelike.get_solver("solver.prototxt")  # fuses by default (fuse=True)
    solver.net.copy_from("init.caffemodel")
    assert fuse_batchnorm_scale(solver.net.graph) == 0  # already fused: nothing left to match
    assert any(isinstance(m, FusedBatchNormScale) for _, m in solver.net.graph.pairs())
    assert any(isinstance(m, PassThrough) for _, m in solver.net.graph.pairs())
    # both ReLUs (after the fused BatchNorm+Scale, after ip1) overwrite their fresh bottoms
    assert sum(isinstance(m, InPlaceActivation) for _, m in solver.net.graph.pairs()) == 2
    solver.step(40)
    want = load_weights(str(CASE / "snapshots" / "tinybn_iter_40.caffemodel"))
    for layer, blobs in solver.net.params.items():
        for i, blob in enumerate(blobs):
            expected = np.asarray(want[layer][i], np.float32).reshape(blob.shape)
            scale = max(1.0, float(np.abs(expected).max()))
            np.testing.assert_allclose(blob.data, expected, rtol=1e-3, atol=1e-4 * scale,
                                       err_msg=f"{layer} blob {i}")


def test_solver_fuse_false_keeps_the_layers(tmp_path, monkeypatch):
    work = tmp_path / "sgd_step"
    shutil.copytree(CASE, work, ignore=shutil.ignore_patterns("snapshots", "*.npz", "*.json", "log.txt"))
    (work / "snapshots").mkdir()
    monkeypatch.chdir(work)
    solver = caffelike.get_solver("solver.prototxt", fuse=False)
    assert not any(isinstance(m, (FusedBatchNormScale, PassThrough)) for _, m in solver.net.graph.pairs())
    assert fuse_batchnorm_scale(solver.net.graph) == 1


def test_pycaffe_backward_on_a_fused_solver_net_is_the_plain_one(tmp_path, monkeypatch):
    # pycaffe's layer-by-layer backward feeds each layer a leaf: the in-place ReLU then runs
    # out of place, and every diff equals the unfused net's
    work = tmp_path / "sgd_step"
    shutil.copytree(CASE, work, ignore=shutil.ignore_patterns("snapshots", "*.npz", "*.json", "log.txt"))
    (work / "snapshots").mkdir()
    monkeypatch.chdir(work)
    diffs, partial = [], []
    for fuse in (True, False):
        net = caffelike.get_solver("solver.prototxt", fuse=fuse).net
        net.copy_from("init.caffemodel")
        net.forward()
        net.backward()
        diffs.append({name: [b.diff.copy() for b in blobs] for name, blobs in net.params.items()})
        net.forward(end="bn1")  # a range that ends between the fused BatchNorm and its Scale
        partial.append(net.blobs["conv1"].data.copy())
    for name, blobs in diffs[1].items():
        for i, want in enumerate(blobs):
            np.testing.assert_allclose(diffs[0][name][i], want, rtol=1e-5, atol=1e-7, err_msg=f"{name} {i}")
    np.testing.assert_allclose(partial[0], partial[1], rtol=1e-5, atol=1e-6, err_msg="conv1 after bn1 alone")


def test_fused_deploy_outputs_match_caffe():
    for case in ("simpleconv3", "book_mobilenet_faceseg"):
        net, inputs, expected = golden_net(case)
        assert fuse_batchnorm_scale(net.graph) > 0
        out = net.forward(**inputs)
        for name, value in expected.items():
            assert_close_scaled(out[name], value, f"{case} {name}")
