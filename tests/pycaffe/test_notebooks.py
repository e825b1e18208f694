"""The classic pycaffe notebooks, step by step, as tests.

Each follows the notebook's own call sequence on a golden net. Expected numbers come from real
Caffe (``tests/golden/nets``, ``tests/golden/solvers``), from the caffemodel read with protobuf,
or from numpy/torch written here; never from caffelike itself. DeepDream's exact sequence
(``forward(end=)``, ``dst.diff[:] = dst.data``, ``backward(start=)``, ``data.diff``) is
``tests/net/test_backward.py::test_deepdream_gradient_at_data_from_a_mid_net_diff``.
"""
from __future__ import annotations

import csv
import json
import pathlib
import shutil

import numpy as np
import torch
import torch.nn.functional as F

import caffelike as caffe
from caffelike.proto import caffe_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
NETS = ROOT / "tests" / "golden" / "nets"
SOLVERS = ROOT / "tests" / "golden" / "solvers"
MOUTH = ROOT / "data" / "mouth"
RTOL, ATOL = 1e-4, 1e-5  # golden README's tolerance


def _golden(name: str) -> tuple[str, str, dict[str, np.ndarray]]:
    d = NETS / name
    data = np.load(d / "data.npz")
    return str(d / "net.prototxt"), str(d / "weights.caffemodel"), {k: data[k] for k in data}


def _caffemodel_blobs(path: str | pathlib.Path) -> dict[str, list[np.ndarray]]:
    """The caffemodel's blobs by layer, read with protobuf alone."""
    model = caffe_pb2.NetParameter()
    model.ParseFromString(pathlib.Path(path).read_bytes())
    return {l.name: [np.asarray(b.data, np.float32).reshape(tuple(b.shape.dim)) for b in l.blobs]
            for l in model.layer if l.blobs}


# --- 00-classification -------------------------------------------------------------------------

MEAN_BGR = np.array([104.008, 116.669, 122.675])  # simpleconv3's TEST ImageData mean_value


def test_classification_transformer_preprocess_equals_numpy_and_caffe():
    net_file, weights, data = _golden("simpleconv3")
    net = caffe.Net(net_file, weights, caffe.TEST)
    net.blobs["data"].reshape(1, 3, 48, 48)
    transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_mean("data", MEAN_BGR)
    transformer.set_raw_scale("data", 255)
    transformer.set_channel_swap("data", (2, 1, 0))
    image = caffe.io.load_image(str(MOUTH / "0" / "446neutral.jpg"))  # RGB in [0, 1], HxWxC
    crop = image[6:54, 6:54]  # centre 48x48 of the 60x60 image: preprocess does not resize it
    got = transformer.preprocess("data", crop)
    expected = (crop.astype(np.float64) * 255)[:, :, ::-1].transpose(2, 0, 1) - MEAN_BGR[:, None, None]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    # the golden input's first image is this file as real Caffe's ImageData layer prepared it
    np.testing.assert_allclose(got, data["input__data"][0], atol=1e-3)
    net.blobs["data"].data[...] = got
    np.testing.assert_allclose(net.forward()["prob"][0], data["output__prob"][0], rtol=RTOL, atol=ATOL)
    # deprocess undoes it (pycaffe's inverse, used by the notebooks to show an input)
    np.testing.assert_allclose(transformer.deprocess("data", got), crop, atol=1e-5)


def test_classification_forward_and_top_k_equal_real_caffe():
    net_file, weights, data = _golden("simpleconv3")
    net = caffe.Net(net_file, weights, caffe.TEST)
    x, prob = data["input__data"], data["output__prob"]
    net.blobs["data"].reshape(1, *x.shape[1:])
    for i in (0, 4):
        net.blobs["data"].data[...] = x[i]
        out = net.forward()
        np.testing.assert_allclose(out["prob"][0], prob[i], rtol=RTOL, atol=ATOL)
        top_k = net.blobs["prob"].data[0].flatten().argsort()[::-1][:2]
        assert list(top_k) == list(prob[i].argsort()[::-1][:2])
    net.blobs["data"].reshape(*x.shape)
    net.blobs["data"].data[...] = x
    out = net.forward()
    predicted = json.loads((NETS / "simpleconv3" / "case.json").read_text())["predicted_classes_prob"]
    assert list(out["prob"].argmax(1)) == predicted


# --- net_surgery -------------------------------------------------------------------------------

LENET_FULL_CONV = """name: "LeNetFullConv"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 40 dim: 40 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 20 kernel_size: 5 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 50 kernel_size: 5 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1-conv" type: "Convolution" bottom: "pool2" top: "ip1-conv" convolution_param { num_output: 500 kernel_size: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1-conv" top: "ip1-conv" }
layer { name: "ip2-conv" type: "Convolution" bottom: "ip1-conv" top: "ip2-conv" convolution_param { num_output: 10 kernel_size: 1 } }
layer { name: "prob" type: "Softmax" bottom: "ip2-conv" top: "prob" }
"""


def test_net_surgery_inner_product_to_convolution(tmp_path):
    net_file, weights, data = _golden("lenet")
    net = caffe.Net(net_file, weights, caffe.TEST)
    params = ["ip1", "ip2"]
    fc_params = {pr: (net.params[pr][0].data, net.params[pr][1].data) for pr in params}
    assert fc_params["ip1"][0].shape == (500, 800) and fc_params["ip2"][0].shape == (10, 500)
    conv_file = tmp_path / "lenet_full_conv.prototxt"
    conv_file.write_text(LENET_FULL_CONV)
    net_full_conv = caffe.Net(str(conv_file), weights, caffe.TEST)  # conv1/conv2 copied by name
    params_full_conv = ["ip1-conv", "ip2-conv"]
    conv_params = {pr: (net_full_conv.params[pr][0].data, net_full_conv.params[pr][1].data)
                   for pr in params_full_conv}
    assert conv_params["ip1-conv"][0].shape == (500, 50, 4, 4)
    for pr, pr_conv in zip(params, params_full_conv):
        conv_params[pr_conv][0].flat = fc_params[pr][0].flat  # flat unrolled arrays
        conv_params[pr_conv][1][...] = fc_params[pr][1]
    saved = tmp_path / "lenet_full_conv.caffemodel"
    net_full_conv.save(str(saved))
    stored = _caffemodel_blobs(saved)
    np.testing.assert_array_equal(stored["ip1-conv"][0].reshape(500, 800), _caffemodel_blobs(weights)["ip1"][0])

    reloaded = caffe.Net(str(conv_file), str(saved), caffe.TEST)
    x, prob = data["input__data"], data["output__prob"]
    big = np.random.default_rng(7).uniform(0, 1, (2, 1, 40, 40)).astype(np.float32)
    big[0, 0, :28, :28] = x[0, 0]   # output position (0, 0) sees input rows/cols 0..27
    big[1, 0, 12:, 12:] = x[1, 0]   # position (3, 3) sees 12..39 (the net's stride is 4)
    reloaded.blobs["data"].data[...] = big
    out = reloaded.forward()["prob"]
    assert out.shape == (2, 10, 4, 4)
    np.testing.assert_allclose(out[0, :, 0, 0], prob[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out[1, :, 3, 3], prob[1], rtol=RTOL, atol=ATOL)


# --- filter visualisation ----------------------------------------------------------------------

def test_filter_visualisation_params_and_blobs():
    net_file, weights, data = _golden("lenet")
    net = caffe.Net(net_file, weights, caffe.TEST)
    stored = _caffemodel_blobs(weights)
    for name in ("conv1", "conv2", "ip1", "ip2"):
        assert [p.data.shape for p in net.params[name]] == [b.shape for b in stored[name]]
        for p, b in zip(net.params[name], stored[name]):
            np.testing.assert_array_equal(p.data, b)
    filters = net.params["conv1"][0].data
    assert filters.shape == (20, 1, 5, 5)
    x = data["input__data"]
    net.blobs["data"].data[...] = x
    net.forward()
    w, b = (torch.from_numpy(a.astype(np.float64)) for a in stored["conv1"])
    expected = F.conv2d(torch.from_numpy(x.astype(np.float64)), w, b).numpy()
    feat = net.blobs["conv1"].data
    assert feat.shape == (64, 20, 24, 24)
    np.testing.assert_allclose(feat, expected, rtol=RTOL, atol=ATOL * np.abs(expected).max())
    pool = F.max_pool2d(torch.from_numpy(expected), 2, 2).numpy()
    np.testing.assert_allclose(net.blobs["pool1"].data, pool, rtol=RTOL, atol=ATOL * np.abs(pool).max())


# --- 01-learning-lenet -------------------------------------------------------------------------

def _losses(case: pathlib.Path) -> dict[int, float]:
    with open(case / "losses.csv") as f:
        return {int(r["iter"]): float(r["loss"]) for r in csv.DictReader(f) if not r["final_forward_only"]}


def test_learning_lenet_by_hand(tmp_path, monkeypatch):
    case = tmp_path / "sgd_step"
    shutil.copytree(SOLVERS / "sgd_step", case,
                    ignore=shutil.ignore_patterns("snapshots", "*.npz", "*.json", "log.txt"))
    for p in case.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    (case / "snapshots").mkdir()  # the solver's snapshot_prefix, checked when it is built
    monkeypatch.chdir(case)
    losses = _losses(SOLVERS / "sgd_step")
    trajectory = np.load(SOLVERS / "sgd_step" / "param_trajectory.npz")
    init = _caffemodel_blobs(case / "init.caffemodel")

    solver = caffe.SGDSolver("solver.prototxt")
    solver.net.copy_from("init.caffemodel")
    assert [(k, v.data.shape) for k, v in solver.net.blobs.items()][:2] == [("data", (32, 3, 12, 12)),
                                                                            ("label", (32,))]
    solver.test_nets[0].forward()  # the test net reads its own source: the train batches stay put
    scores = solver.test_nets[0].blobs["ip2"].data
    labels = solver.test_nets[0].blobs["label"].data
    np.testing.assert_allclose(solver.test_nets[0].blobs["accuracy"].data,
                               np.mean(scores.argmax(1) == labels), rtol=1e-6)

    solver.step(1)
    blobs = solver.net.blobs
    np.testing.assert_allclose(float(blobs["loss"].data), losses[0], rtol=1e-5)  # glog's 6 digits
    for name in ("data", "label", "conv1", "pool1", "ip1", "ip2"):
        assert np.abs(blobs[name].data).max() > 0, name  # every blob holds the last pass
    # Caffe's SGD leaves the update value in the diff (history = lr * (grad + decay * w) at step 1)
    w1 = trajectory["conv1_0"][0]
    np.testing.assert_allclose(solver.net.params["conv1"][0].data, w1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(solver.net.params["conv1"][0].diff, init["conv1"][0] - w1,
                               rtol=1e-3, atol=1e-6)
    for key in ("ip1_0", "ip2_0", "ip2_1"):
        layer, i = key.rsplit("_", 1)
        np.testing.assert_allclose(solver.net.params[layer][int(i)].data, trajectory[key][0],
                                   rtol=1e-4, atol=1e-6)
        # the test net shares the train net's weights
        np.testing.assert_array_equal(solver.test_nets[0].params[layer][int(i)].data,
                                      solver.net.params[layer][int(i)].data)
    # a forward after the step is Caffe's iteration 1: the next batch with the updated weights
    solver.net.forward()
    np.testing.assert_allclose(float(blobs["loss"].data), losses[1], rtol=1e-5)
