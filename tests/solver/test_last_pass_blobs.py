"""After ``solver.step()`` every blob of ``solver.net.blobs`` holds the last iteration's values
(pycaffe's behaviour), not only the net outputs.

Expected numbers from Caffe's formulas: InnerProduct ``x W^T + b``, EuclideanLoss
``sum((a - b)^2) / (2N)`` and SGD ``W -= lr * dW`` (no momentum, no decay).
"""
from __future__ import annotations

import numpy as np

import caffelike

NET = """
layer { name: "data" type: "DummyData" top: "data" top: "target"
        dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 }
                           data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 0 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "constant" value: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""


def _solver(tmp_path, text: str):
    net = tmp_path / "net.prototxt"
    net.write_text(text)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{net}"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 10\n'
                           'snapshot_after_train: false\n')
    return caffelike.get_solver(str(solver_file))


def test_blobs_hold_the_last_iteration_after_step(tmp_path):
    solver = _solver(tmp_path, NET)
    solver.step(1)
    blobs = solver.net.blobs
    np.testing.assert_allclose(blobs["ip"].data, 1.5)  # 3 * 0.5
    np.testing.assert_allclose(blobs["data"].data, 1.0)
    np.testing.assert_allclose(blobs["loss"].data, 2.25)  # 4 * 1.5^2 / (2 * 2)
    solver.step(1)
    # dL/dip = 1.5 / 2; dW = 2 * 0.75 = 1.5 -> W = 0.35, b = -0.15; ip = 3 * 0.35 - 0.15
    np.testing.assert_allclose(blobs["ip"].data, 0.9, rtol=1e-6)
    np.testing.assert_allclose(blobs["loss"].data, 4 * 0.81 / 4, rtol=1e-6)


INPUT_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 2 } } }
""" + NET.split("\n", 4)[4]


def test_an_input_blob_written_through_an_old_view_keeps_the_new_value(tmp_path):
    solver = _solver(tmp_path, INPUT_NET)
    view = solver.net.blobs["data"].data
    view[...] = 1.0
    solver.step(1)
    np.testing.assert_allclose(solver.net.blobs["ip"].data, 1.5)
    view[...] = 2.0  # the next batch, written through the view taken before step()
    np.testing.assert_allclose(solver.net.blobs["data"].data, 2.0)
