"""Issue 9, row 3: the numerical guard (caffelike/guard.py) and its place in training.

Expected non-finite values come from IEEE arithmetic in Caffe's formulas: log_layer.cpp takes
log(shift + scale * x) (NaN for a negative argument); power_layer.cpp's backward multiplies by
power * scale * (shift + scale * x)^(power - 1) (Inf at x = 0 for power 0.5); a NaN weight
makes every output it touches NaN (inner_product_layer.cpp is a GEMM).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffelike import guard
from caffelike.errors import NumericalError
from caffelike.net import Net

from .helpers import edit, layer_line, run_cli

NET = """name: "g"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 2 } }
layer { name: "f" type: "%s" bottom: "ip1" top: "f" %s }
layer { name: "loss" type: "EuclideanLoss" bottom: "f" bottom: "label" top: "loss" }
"""


def _net(tmp_path, layer_type: str, params: str = "") -> Net:
    path = tmp_path / "guard.prototxt"
    path.write_text(NET % (layer_type, params))
    return Net(str(path), 0)


def _inputs(data: np.ndarray) -> dict[str, torch.Tensor]:
    return {"data": torch.tensor(data, dtype=torch.float32), "label": torch.ones(2, 2)}


def test_loss_check_is_a_scalar_test():
    assert guard.loss_is_finite(1.5) and guard.loss_is_finite(torch.tensor(0.0))
    assert not guard.loss_is_finite(float("nan")) and not guard.loss_is_finite(float("inf"))
    assert not guard.loss_is_finite(torch.tensor(float("-inf")))


def test_forward_nan_names_the_first_layer_with_a_nan_top(tmp_path):
    net = _net(tmp_path, "Log")
    net.params["ip1"][0].data = -np.eye(2, 3, dtype=np.float32)  # ip1 = -x: negative for x > 0
    net.params["ip1"][1].data = np.zeros(2, np.float32)
    found = guard.diagnose(net, _inputs(np.ones((2, 3), np.float32)))
    assert (found.layer, found.type, found.stage, found.what, found.value) == ("f", "Log", "forward", "top 'f'", "NaN")
    assert found.where.line == 6 and found.where.file.endswith("guard.prototxt")


def test_nan_weight_is_named_before_its_output(tmp_path):
    net = _net(tmp_path, "ReLU")
    w = net.params["ip1"][0].data
    w[0, 0] = np.nan
    net.params["ip1"][0].data = w
    found = guard.diagnose(net, _inputs(np.ones((2, 3), np.float32)))
    assert (found.layer, found.stage, found.what, found.value) == ("ip1", "forward", "param 0", "NaN")


def test_backward_inf_names_the_layer_whose_gradient_blows_up(tmp_path):
    net = _net(tmp_path, "Power", "power_param { power: 0.5 }")
    net.params["ip1"][0].data = np.zeros((2, 3), np.float32)  # ip1 = 0: sqrt is finite, its slope is not
    net.params["ip1"][1].data = np.zeros(2, np.float32)
    found = guard.diagnose(net, _inputs(np.ones((2, 3), np.float32)))
    assert (found.layer, found.type, found.stage) == ("f", "Power", "backward")
    assert found.what == "gradient of bottom 'ip1'"


def test_finite_batch_gives_no_diagnosis(tmp_path):
    net = _net(tmp_path, "ReLU")
    assert guard.diagnose(net, _inputs(np.ones((2, 3), np.float32))) is None


def test_raise_nonfinite_message_shape(tmp_path):
    net = _net(tmp_path, "Log")
    net.params["ip1"][0].data = -np.eye(2, 3, dtype=np.float32)
    blobs = net.run(_inputs(np.ones((2, 3), np.float32)))
    loss = float(net.objective(blobs).detach())
    assert not guard.loss_is_finite(loss)
    with pytest.raises(NumericalError) as info:
        guard.raise_nonfinite(net, blobs, 7, loss)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{tmp_path / 'guard.prototxt'}:6: layer 'f' (Log): iteration 7: loss is nan; ")
    assert "forward pass: top 'f'" in text and "--no-nan-guard" in text


def test_guard_reruns_the_same_batch_without_reading_new_data(sgd_case):
    """Data layers are not advanced by a diagnosis: the re-run uses the failed pass's tops."""
    from caffelike.solver.loop import Solver

    solver = Solver(str(sgd_case / "solver.prototxt"))
    blobs = solver.net.run()
    first = blobs["data"].detach().clone()
    params = [p.detach().clone() for p in solver.net.parameters()]  # BatchNorm's stats included
    assert guard.diagnose(solver.net, guard.source_inputs(solver.net, blobs)) is None
    assert all(torch.equal(a, b.detach()) for a, b in zip(params, solver.net.parameters()))
    second = solver.net.run()["data"]
    assert not torch.equal(first, second)  # the next batch, not a repeat (8 batches per epoch)
    # and the batch after the diagnosis is batch 2 of an uninterrupted reader (rows 32..63)
    import h5py
    with h5py.File(sgd_case / "train.h5") as h5:
        np.testing.assert_array_equal(second.numpy(), h5["data"][32:64])


def _nan_data(work):
    import h5py

    with h5py.File(work / "train.h5", "r+") as h5:
        data = h5["data"][...]
        data[3, 1, 4, 4] = np.nan  # one NaN pixel in the first batch
        h5["data"][...] = data


def test_training_stops_on_nan_loss_naming_iteration_and_layer(sgd_case, capsys):
    _nan_data(sgd_case)
    edit(sgd_case / "solver.prototxt", "max_iter: 40", "max_iter: 3")
    result = run_cli(capsys, "train", "-solver", "solver.prototxt")
    line = layer_line(sgd_case / "train_val.prototxt", "data")  # the TRAIN data layer, first in the file
    assert result.error.startswith(f"train_val.prototxt:{line}: layer 'data' (HDF5Data): iteration 0: loss is nan; ")
    assert "forward pass: top 'data'" in result.error  # the batch itself holds the NaN
    assert not list((sgd_case / "snapshots").iterdir())  # nothing trained on garbage is saved


def test_no_nan_guard_keeps_caffes_carry_on_behaviour(sgd_case, capsys):
    from caffelike.cli import main

    _nan_data(sgd_case)
    edit(sgd_case / "solver.prototxt", "max_iter: 40", "max_iter: 2")
    edit(sgd_case / "solver.prototxt", "snapshot: 20", "snapshot: 0")
    assert main(["train", "-solver", "solver.prototxt", "-no-nan-guard"]) == 0
    assert (sgd_case / "snapshots" / "tinybn_iter_2.caffemodel").exists()


def test_guard_names_the_layer_when_an_earlier_sub_batch_of_iter_size_went_nan(tmp_path, monkeypatch, capsys):
    from .helpers import copy_case

    work = copy_case("sgd_multistep_itersize2", tmp_path)
    monkeypatch.chdir(work)
    _nan_data(work)  # row 3 of train.h5: the first of the two sub-batches of iteration 0
    result = run_cli(capsys, "train", "-solver", "solver.prototxt")
    line = layer_line(work / "train_val.prototxt", "data")
    assert result.error.startswith(f"train_val.prototxt:{line}: layer 'data' (HDF5Data): iteration 0: ")


def test_loss_check_costs_no_measurable_time():
    """The per-iteration check is one float comparison: far below a millisecond."""
    import time

    loss = np.float32(0.5)
    start = time.perf_counter()
    for _ in range(10000):
        guard.loss_is_finite(loss)
    assert (time.perf_counter() - start) / 10000 < 2e-5
