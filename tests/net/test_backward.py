"""pycaffe's layer-by-layer backward (Caffe's Net::BackwardFromTo) and ClearParamDiffs.

Expected values: a hand-written torch (float64) computation of GoogLeNet's first layers for the
DeepDream gradient, Caffe's documented EuclideanLoss/InnerProduct formulas for parameter
diffs. The solver's whole-graph autograd and the per-layer path must agree.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

import caffelike
from caffelike.io import read_net
from caffelike.net import Net

from .conftest import GOLDEN

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOOGLENET = ROOT / "tests" / "data" / "corpus" / "BVLC__caffe" / "models" / "bvlc_googlenet" / "deploy.prototxt"


def _reference_inception_3a(net: Net, x: torch.Tensor) -> torch.Tensor:
    """GoogLeNet from data to inception_3a/output, written from the prototxt (float64)."""
    p = {name: [torch.from_numpy(b.data.astype(np.float64)) for b in blobs] for name, blobs in net.params.items()}

    def conv(name, t, pad=0, stride=1):
        w, b = p[name]
        return F.relu(F.conv2d(t, w, b, stride=stride, padding=pad))

    def pool(t, k, s, pad=0):
        return F.max_pool2d(t, k, s, padding=pad, ceil_mode=True)

    def lrn(t):
        return F.local_response_norm(t, 5, alpha=1e-4, beta=0.75, k=1.0)

    t = lrn(pool(conv("conv1/7x7_s2", x, 3, 2), 3, 2))
    t = conv("conv2/3x3", conv("conv2/3x3_reduce", t), 1)
    t = pool(lrn(t), 3, 2)
    return torch.cat([
        conv("inception_3a/1x1", t),
        conv("inception_3a/3x3", conv("inception_3a/3x3_reduce", t), 1),
        conv("inception_3a/5x5", conv("inception_3a/5x5_reduce", t), 2),
        conv("inception_3a/pool_proj", pool(t, 3, 1, 1)),
    ], 1)


def test_deepdream_gradient_at_data_from_a_mid_net_diff():
    # DeepDream patches the deploy net with force_backward: true (no loss: nothing needs backward otherwise)
    # Fixed filler weights: a float32 ReLU/max decision may flip against the float64 reference
    # where a pre-activation is within rounding of a kink; seed 0 has none (checked).
    caffelike.set_random_seed(0)
    model, source_map = read_net(str(GOOGLENET))
    model.force_backward = True
    net = Net(model, caffelike.TEST, source_map=source_map)
    net.blobs["data"].reshape(1, 3, 224, 224)  # net.reshape() needs pool5 (7x7) to fit
    net.reshape()
    x = np.random.default_rng(0).uniform(-50, 50, (1, 3, 224, 224)).astype(np.float32)
    net.blobs["data"].data[...] = x
    # DeepDream's step: forward to a layer, its data as its diff, backward from there.
    end = "inception_4c/output"
    net.forward(end=end)
    dst = net.blobs[end]
    dst.diff[:] = dst.data
    net.backward(start=end)
    assert np.abs(net.blobs["data"].diff).max() > 0
    end = "inception_3a/output"
    net.forward(end=end)
    dst = net.blobs[end]
    dst.diff[:] = dst.data
    net.backward(start=end)
    xr = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    out = _reference_inception_3a(net, xr)
    np.testing.assert_allclose(dst.data, out.detach().numpy(), rtol=1e-4, atol=1e-4 * float(out.detach().abs().max()))
    (0.5 * (out ** 2).sum()).backward()
    expected = xr.grad.numpy()
    got = net.blobs["data"].diff
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    # the producer of a split blob holds the sum of its readers' gradients
    split = [f"pool2/3x3_s2_pool2/3x3_s2_0_split_{j}" for j in range(4)]
    parts = [net.blobs[n].diff for n in split]
    assert all(np.abs(d).max() > 0 for d in parts)
    np.testing.assert_allclose(net.blobs["pool2/3x3_s2"].diff, sum(parts), rtol=1e-5,
                               atol=1e-6 * np.abs(parts[0]).max())


EUCLID = """
force_backward: true
layer { name: 'data' type: 'Input' top: 'data' top: 'target' input_param { shape { dim: 4 dim: 3 } } }
layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip'
        inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 1 } bias_filler { type: 'constant' value: 0.5 } } }
layer { name: 'loss' type: 'EuclideanLoss' bottom: 'ip' bottom: 'target' top: 'loss' }
"""


def test_param_diffs_accumulate_until_cleared(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(EUCLID)
    net = Net(str(path), caffelike.TRAIN)
    rng = np.random.default_rng(1)
    x, t = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    net.forward(data=x, target=t)
    net.backward()
    w, b = (p.data.astype(np.float64) for p in net.params["ip"])
    # EuclideanLoss = sum((ip - t)^2) / (2N): d/d ip = (ip - t) / N; ip = x W^T + b
    dip = (x @ w.T + b - t) / 4
    np.testing.assert_allclose(net.params["ip"][0].diff, dip.T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.params["ip"][1].diff, dip.sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.blobs["data"].diff, dip @ w, rtol=1e-5, atol=1e-6)
    first = net.params["ip"][0].diff.copy()
    net.backward()
    np.testing.assert_allclose(net.params["ip"][0].diff, 2 * first, rtol=1e-6)
    np.testing.assert_allclose(net.blobs["data"].diff, dip @ w, rtol=1e-5, atol=1e-6)  # overwritten
    diff = net.params["ip"][0].diff
    net.clear_param_diffs()
    assert (diff == 0).all() and (net.params["ip"][1].diff == 0).all()


def test_backward_reads_the_loss_weight_from_the_loss_top_diff(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(EUCLID)
    net = Net(str(path), caffelike.TRAIN)
    rng = np.random.default_rng(2)
    net.forward(data=rng.normal(size=(4, 3)).astype(np.float32), target=np.zeros((4, 3), np.float32))
    assert net.blobs["loss"].diff == 1.0
    net.backward()
    one = net.blobs["data"].diff.copy()
    net.blobs["loss"].diff[...] = 3.0
    net.backward(start="loss", end="ip")
    np.testing.assert_allclose(net.blobs["data"].diff, 3 * one, rtol=1e-6)


def test_per_layer_backward_equals_the_solver_whole_graph_gradients():
    golden = json.loads((GOLDEN / "shapes" / "BVLC__caffe__examples__mnist__mnist_autoencoder.prototxt.json").read_text())
    net = Net(str(GOLDEN / "shapes" / golden["prototxt_copy"]), caffelike.TEST)
    assert any(layer.type == "Split" for layer in net.layers)
    x = np.random.default_rng(3).uniform(size=net.blobs["data"].shape).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    net.clear_param_diffs()
    net.backward()
    per_layer = {(info.layer, info.index): net.params[info.layer][info.index].diff.copy()
                 for info in net.learnable_params}
    params = [info.tensor for info in net.learnable_params]
    grads = torch.autograd.grad(net.objective(net.run({"data": torch.from_numpy(x)})), params)
    assert len(per_layer) == len(grads) > 0
    for (key, ours), g in zip(per_layer.items(), grads):
        np.testing.assert_allclose(ours, g.numpy(), rtol=1e-4, atol=1e-6 * float(g.abs().max()) + 1e-12,
                                   err_msg=str(key))
