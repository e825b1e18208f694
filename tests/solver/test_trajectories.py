"""Every parameter blob after every iteration vs real Caffe's (param_trajectory.npz).

The golden file (tests/golden/solvers/<case>/param_trajectory.npz, see the README there) holds
the float32 parameters after each iteration of pycaffe's ``Solver.step(1)`` loop, bit-identical
to `caffe train`. We run the same loop through caffelike's pycaffe surface and compare whole
arrays at every iteration, at the whole-run tolerance of tests/golden/README.md. Blobs that
Caffe's run cannot pin down are skipped by name (helpers.NOT_COMPARABLE gives the reason);
BatchNorm's running mean behind such a bias is compared with the bias's share removed.
"""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from caffelike.proto import caffe_pb2

from .helpers import CASES, NOT_COMPARABLE, RUN_RTOL, SOLVERS, assert_close_scaled, copy_case, model_blobs

# case -> (BatchNorm mean blob, the noise-driven bias whose per-channel value it accumulates)
BIAS_SHARE_REMOVED = {"adam_fixed": ("bn1_0", "conv1_1")}


def _moving_average_fraction(net_file, layer: str) -> float:
    net = text_format.Parse(net_file.read_text(), caffe_pb2.NetParameter())
    return next(l.batch_norm_param.moving_average_fraction for l in net.layer if l.name == layer)


def _without_bias(means: np.ndarray, biases: np.ndarray, fraction: float) -> np.ndarray:
    """BatchNorm's mean blob less what the bias added to it.

    Caffe's update is ``blob = fraction * blob + batch_mean`` and the batch mean of a
    convolution's channel holds the bias used in that iteration's forward (``biases[t]``:
    the initial bias, then the bias after each iteration), so the bias's share is the same
    moving sum of the biases.
    """
    share = np.zeros(means.shape[1:], np.float64)
    out = np.empty(means.shape, np.float64)
    for t in range(len(means)):
        share = fraction * share + biases[t]
        out[t] = means[t] - share
    return out


@pytest.mark.parametrize("case", CASES)
def test_params_after_every_iteration(case, tmp_path, monkeypatch):
    _check_trajectory(case, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", CASES)
def test_params_after_every_iteration_channels_last(case, tmp_path, monkeypatch):
    """The channels_last CPU step (NHWC weights, inputs and activations; the solver's choice
    for nets of several convolutions) stays on Caffe's trajectory at the same tolerance."""
    _check_trajectory(case, tmp_path, monkeypatch, channels_last=True)


def _check_trajectory(case, tmp_path, monkeypatch, **solver_options) -> None:
    import caffelike

    work = copy_case(case, tmp_path)
    monkeypatch.chdir(work)
    solver = caffelike.get_solver("solver.prototxt", **solver_options)
    solver.net.copy_from("init.caffemodel")
    want = np.load(SOLVERS / case / "param_trajectory.npz")
    rtol = RUN_RTOL.get(case, 1e-3)
    skip = {f"{layer}_{i}" for layer, i in NOT_COMPARABLE.get(case, {})}
    keys = [f"{layer}_{i}" for layer, blobs in solver.net.params.items() for i in range(len(blobs))]
    assert sorted(keys) == sorted(want.files)
    got = {key: [] for key in keys}
    for it in range(1, len(want[keys[0]]) + 1):
        solver.step(1)
        assert solver.iter == it
        for layer, blobs in solver.net.params.items():
            for i, blob in enumerate(blobs):
                got[f"{layer}_{i}"].append(blob.data.copy())
    for key in keys:
        if key in skip:
            continue
        for row, (mine, caffe) in enumerate(zip(got[key], want[key]), 1):
            assert_close_scaled(mine, caffe, rtol=rtol, msg=f"{key} after iteration {row}")
    if case in BIAS_SHARE_REMOVED:
        mean_key, bias_key = BIAS_SHARE_REMOVED[case]
        fraction = _moving_average_fraction(work / "train_val.prototxt", mean_key.rsplit("_", 1)[0])
        layer, index = bias_key.rsplit("_", 1)
        init = model_blobs(work / "init.caffemodel")[(layer, int(index))][None]
        mine = _without_bias(np.stack(got[mean_key]), np.concatenate([init, np.stack(got[bias_key])]),
                             fraction)
        caffe = _without_bias(want[mean_key], np.concatenate([init, want[bias_key]]), fraction)
        for row, (m, c) in enumerate(zip(mine, caffe), 1):
            assert_close_scaled(m, c, rtol=rtol, msg=f"{mean_key} less {bias_key}'s share, iteration {row}")
