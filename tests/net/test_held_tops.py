"""A DummyData top with a constant filler is filled once and then kept, as in Caffe.

dummy_data_layer.cpp fills the constant tops in LayerSetUp and its Forward refills only the
others, so a script may write such a blob (real pycaffe's test_net.py writes random labels
into one) and every later pass reads what it wrote; an in-place layer's change stays too.
Expected values come from the formulas: SoftmaxWithLoss ``-log softmax(x)[label]`` averaged
over the batch, EuclideanLoss ``sum((a - b)^2) / (2N)``, InnerProduct ``x W^T + b``.
"""
from __future__ import annotations

import numpy as np

import caffelike

CLASSIFIER = """
name: "held" force_backward: true
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                           data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _net(tmp_path, text: str, phase: int = caffelike.TRAIN) -> caffelike.Net:
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return caffelike.Net(str(path), phase)


def _softmax_loss(x: np.ndarray, labels: np.ndarray) -> float:
    x = x.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    log_p = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels.astype(int)].mean())


def test_a_constant_top_holds_its_value_before_any_forward(tmp_path):
    net = _net(tmp_path, CLASSIFIER)
    np.testing.assert_array_equal(net.blobs["label"].data, 2)


def test_written_labels_are_what_forward_and_backward_read(tmp_path):
    net = _net(tmp_path, CLASSIFIER)
    labels = np.array([0, 4, 1, 3], dtype=np.float32)
    net.blobs["label"].data[...] = labels
    first = net.forward()["loss"].copy()
    np.testing.assert_array_equal(net.blobs["label"].data, labels)
    data = net.blobs["data"].data.copy()
    np.testing.assert_allclose(first, _softmax_loss(net.blobs["ip"].data, labels), rtol=1e-5)
    net.backward()
    w = net.params["ip"][0].data.astype(np.float64)
    ip = data.astype(np.float64) @ w.T
    p = np.exp(ip - ip.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(4), labels.astype(int)] -= 1
    np.testing.assert_allclose(net.params["ip"][0].diff, p.T @ data / 4, rtol=1e-4, atol=1e-6)
    net.forward()  # the gaussian top draws again; the written labels stay
    assert not np.array_equal(net.blobs["data"].data, data)
    np.testing.assert_array_equal(net.blobs["label"].data, labels)


def test_written_labels_stay_for_partial_and_gradient_free_passes(tmp_path):
    text = CLASSIFIER.replace("force_backward: true", "")
    net = _net(tmp_path, text, caffelike.TEST)
    labels = np.array([1, 1, 0, 2], dtype=np.float32)
    net.blobs["label"].data[...] = labels
    loss = net.forward()["loss"]
    np.testing.assert_allclose(loss, _softmax_loss(net.blobs["ip"].data, labels), rtol=1e-5)
    net.forward(end="data")
    np.testing.assert_array_equal(net.blobs["label"].data, labels)


def test_an_in_place_change_of_a_held_top_stays(tmp_path):
    # Caffe never refills the constant top, so each pass adds one more to it.
    net = _net(tmp_path, """
        layer { name: "d" type: "DummyData" top: "a"
                dummy_data_param { shape { dim: 2 } data_filler { type: "constant" value: 1 } } }
        layer { name: "p" type: "Power" bottom: "a" top: "a" power_param { shift: 1 } }
    """, caffelike.TEST)
    for expected in (2, 3, 4):
        np.testing.assert_array_equal(net.forward()["a"], expected)


def test_the_solver_reads_a_written_target(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text("""
        layer { name: "data" type: "DummyData" top: "data" top: "target"
                dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 }
                                   data_filler { type: "constant" value: 1 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
                inner_product_param { num_output: 2 weight_filler { type: "constant" value: 0.5 } } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
    """)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{net}"\nbase_lr: 0\nlr_policy: "fixed"\nmax_iter: 10\n'
                           'snapshot_after_train: false\n')
    solver = caffelike.get_solver(str(solver_file))
    np.testing.assert_array_equal(solver.net.blobs["target"].data, 1)
    solver.step(1)
    np.testing.assert_allclose(solver.net.blobs["loss"].data, 4 * 0.5 ** 2 / 4)  # ip = 1.5
    solver.net.blobs["target"].data[...] = 3.5
    solver.step(1)
    np.testing.assert_allclose(solver.net.blobs["loss"].data, 4 * 2.0 ** 2 / 4)
    np.testing.assert_array_equal(solver.net.blobs["target"].data, 3.5)
