"""The CPU training step's speed choices (issue 17) change nothing but speed.

* channels_last: a net of several plain 2-D convolutions whose layers all keep NHWC tensors
  runs its CPU training step channels_last where it pays (per convolution) unless told
  otherwise; the weights, diffs, history and every blob after a few iterations equal those of
  the same solver run NCHW (``channels_last=False``) within float tolerance (the kernels sum
  in other orders). Caffe's own trajectories with channels_last are in test_trajectories.py.
* SGD leaves out blobs of local rate 0 and zero history (BatchNorm's statistics): the result
  is bit-identical to updating them, and a restored nonzero history is still applied, as in
  Caffe (``v = momentum*v + 0*g``; ``w -= v``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffelike
from caffelike import accel

INPUT = """name: "SmallConvNet"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 6 dim: 3 dim: 12 dim: 12 } shape { dim: 6 } } }
"""
BODY = """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "conv1/scale" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 %s weight_filler { type: "xavier" } } }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "conv3" top: "sum" }
layer { name: "relu2" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "pool2" type: "Pooling" bottom: "sum" top: "pool2"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
%s
layer { name: "conv4" type: "Convolution" bottom: "pool2" top: "conv4"
  convolution_param { num_output: 16 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv4" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } bias_filler { type: "gaussian" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""
SOLVER = """net: "%s"
base_lr: 0.05
momentum: 0.9
weight_decay: 0.001
lr_policy: "fixed"
max_iter: 100
display: 0
random_seed: 3
snapshot_after_train: false
solver_mode: CPU
"""
LRN = 'layer { name: "norm" type: "LRN" bottom: "pool2" top: "pool2" lrn_param { local_size: 3 } }'


def _solver(tmp_path, body: str = BODY % ("", ""), **options):
    net = tmp_path / "net.prototxt"
    net.write_text(INPUT + body)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(SOLVER % net)
    return caffelike.get_solver(str(solver_file), **options)


def _is_nhwc(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_cpu_rule_picks_channels_last_for_plain_conv_nets(tmp_path):
    solver = _solver(tmp_path)
    graph = solver.net.graph
    assert accel.channels_last_auto(solver.net, "cpu", None)
    # conv1 has too few outputs (8) and conv4 too small a map (3x3): they stay NCHW, conv4
    # reading the NHWC pool2; conv2 and conv3 go NHWC
    conv1, conv2, conv3, conv4 = (graph.module(graph.layer_index(name))
                                  for name in ("conv1", "conv2", "conv3", "conv4"))
    assert not _is_nhwc(conv1.blobs[0]) and not conv1.channels_last
    assert not _is_nhwc(conv4.blobs[0]) and not conv4.channels_last
    assert _is_nhwc(conv2.blobs[0]) and _is_nhwc(conv3.blobs[0])
    assert conv2.channels_last and conv3.channels_last
    assert not solver._channels_last_inputs  # (only with channels_last=True)


@pytest.mark.parametrize("body, amp", [
    (BODY % ("group: 2", ""), None),  # a grouped convolution
    (BODY % ("", LRN), None),  # a layer type outside the NHWC list
    (BODY % ("", ""), "bf16"),  # AMP on the CPU: left as it was
])
def test_cpu_rule_declines(tmp_path, body, amp):
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(INPUT + body)
    net = caffelike.Net(str(net_file), caffelike.TRAIN)
    assert not accel.channels_last_auto(net, "cpu", amp)


def test_cpu_rule_needs_two_convolutions(tmp_path):
    one_conv = INPUT + BODY.split('layer { name: "conv2"')[0] + (
        'layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"\n'
        '  inner_product_param { num_output: 5 } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }\n')
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(one_conv)
    assert not accel.channels_last_auto(caffelike.Net(str(net_file), caffelike.TRAIN), "cpu", None)


@pytest.mark.parametrize("option", [None, True])
def test_channels_last_step_equals_nchw_step(tmp_path, option):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((6, 3, 12, 12)).astype(np.float32)
    label = rng.integers(0, 5, 6).astype(np.float32)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    nhwc = _solver(tmp_path / "a", channels_last=option)  # None: the CPU rule's choice
    nchw = _solver(tmp_path / "b", channels_last=False)
    graph = nhwc.net.graph
    assert _is_nhwc(graph.module(graph.layer_index("conv2")).blobs[0])
    for name, blobs in nchw.net.params.items():  # the same start
        for mine, theirs in zip(nhwc.net.params[name], blobs):
            mine.data[...] = theirs.data
    for solver in (nhwc, nchw):
        solver.net.blobs["data"].data[...] = data
        solver.net.blobs["label"].data[...] = label
        solver.step(4)
    _assert_trained_alike(nhwc, nchw)


def _assert_trained_alike(mine, nchw) -> None:
    """Weights, diffs, history and blobs of solver ``mine`` equal the NCHW solver's (within
    float tolerance: the kernels sum in other orders)."""
    for name, blobs in nchw.net.params.items():
        for i, (a, b) in enumerate(zip(mine.net.params[name], blobs)):
            np.testing.assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-5, err_msg=f"{name}[{i}] data")
            np.testing.assert_allclose(a.diff, b.diff, rtol=1e-4, atol=1e-6, err_msg=f"{name}[{i}] diff")
    for a, b in zip(mine.history, nchw.history):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    for name, blob in nchw.net.blobs.items():
        np.testing.assert_allclose(mine.net.blobs[name].data, blob.data, rtol=1e-4, atol=1e-5, err_msg=name)


def _without_skipping(solver) -> None:
    import dataclasses

    solver.rule = dataclasses.replace(solver.rule, zero_rate_is_no_op=False)
    solver._select_updated()


def _fed(solver, seed: int = 0):
    rng = np.random.default_rng(seed)
    solver.net.blobs["data"].data[...] = rng.standard_normal((6, 3, 12, 12)).astype(np.float32)
    solver.net.blobs["label"].data[...] = rng.integers(0, 5, 6).astype(np.float32)
    return solver


def test_zero_rate_blobs_left_out_bit_identically(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    skipping = _fed(_solver(tmp_path / "a", channels_last=False))
    full = _fed(_solver(tmp_path / "b", channels_last=False))
    _without_skipping(full)
    n = len(skipping._params)
    assert len(full._updated) == n and len(skipping._updated) == n - 3  # conv1/bn's mean, var, factor
    for name, blobs in full.net.params.items():
        for mine, theirs in zip(skipping.net.params[name], blobs):
            mine.data[...] = theirs.data
    skipping.step(3)
    full.step(3)
    for name, blobs in full.net.params.items():
        for i, (mine, theirs) in enumerate(zip(skipping.net.params[name], blobs)):
            np.testing.assert_array_equal(mine.data, theirs.data, err_msg=f"{name}[{i}]")
            np.testing.assert_array_equal(mine.diff, theirs.diff, err_msg=f"{name}[{i}] diff")
    for mine, theirs in zip(skipping.history, full.history):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_restored_history_of_a_zero_rate_blob_still_moves_it(tmp_path):
    solver = _fed(_solver(tmp_path, channels_last=False))
    names = [(info.layer, info.index) for info in solver._params]
    k = names.index(("conv1/bn", 0))  # BatchNorm's mean sum: lr_mult 0
    with torch.no_grad():
        solver.history[k].fill_(0.5)
    solver.param.snapshot_prefix = str(tmp_path / "snap")
    _, state = solver.snapshot()
    resumed = _fed(_solver(tmp_path, channels_last=False))
    resumed.restore(state)
    before = resumed.net.params["conv1/bn"][0].data.copy()
    resumed.apply_update()  # the statistics stay as they are: only the update moves them
    moved = np.float32(0.9) * np.float32(0.5)  # v = momentum*v + local_rate 0 * g; w -= v
    np.testing.assert_array_equal(resumed.net.params["conv1/bn"][0].data, before - moved)


def test_channels_last_snapshot_and_resume_keep_caffe_order(tmp_path):
    solver = _fed(_solver(tmp_path))  # the CPU rule: conv2 and conv3 NHWC
    solver.step(2)
    solver.param.snapshot_prefix = str(tmp_path / "snap")
    model, state = solver.snapshot()
    net = caffelike.Net(str(tmp_path / "net.prototxt"), model, caffelike.TEST)
    for name, blobs in solver.net.params.items():
        for i, blob in enumerate(blobs):
            np.testing.assert_array_equal(net.params[name][i].data, blob.data, err_msg=f"{name}[{i}]")
    resumed = _solver(tmp_path)
    resumed.restore(state)
    for mine, theirs in zip(resumed.history, solver.history):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    for name, blobs in solver.net.params.items():
        for i, blob in enumerate(blobs):
            np.testing.assert_array_equal(resumed.net.params[name][i].data, blob.data, err_msg=f"{name}[{i}]")


# BODY's conv1 + BatchNorm + Scale + ReLU, then an NHWC conv2 reading relu1 and an InnerProduct
# reading the leaky relu2
ACTIVATION_INTO = BODY.split('layer { name: "pool1"')[0] + """
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" relu_param { negative_slope: 0.1 } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv2" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def test_activation_writes_its_top_in_the_readers_layout(tmp_path, monkeypatch):
    """relu1 (NCHW bottom) feeds the NHWC conv2 and the leaky relu2 (NHWC bottom) feeds an
    InnerProduct that flattens NCHW: each writes its top in its reader's layout (one copy with
    the activation; ActivationInto). Four iterations equal the NCHW solver's."""
    calls = []
    fused = accel._ActivationInto.apply
    monkeypatch.setattr(accel._ActivationInto, "apply", lambda *a: calls.append(a[2]) or fused(*a))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    into = _fed(_solver(tmp_path / "a", ACTIVATION_INTO))
    nchw = _fed(_solver(tmp_path / "b", ACTIVATION_INTO, channels_last=False))
    graph = into.net.graph
    assert [type(graph.module(graph.layer_index(n))).__name__ for n in ("relu1", "relu2")] == \
        ["ActivationInto", "ActivationInto"]
    for name, blobs in nchw.net.params.items():
        for mine, theirs in zip(into.net.params[name], blobs):
            mine.data[...] = theirs.data
    into.step(4)
    nchw.step(4)
    assert calls == [torch.channels_last, torch.contiguous_format] * 4
    _assert_trained_alike(into, nchw)


@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("layout, back", [(torch.channels_last, torch.contiguous_format),
                                          (torch.contiguous_format, torch.channels_last)])
def test_activation_into_gradient(slope, layout, back):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, generator=gen).contiguous(memory_format=back)
    x = x.requires_grad_()

    def fn(t):
        return accel._ActivationInto.apply(t, slope, layout, back)

    y = fn(x)
    assert y.is_contiguous(memory_format=layout)
    torch.testing.assert_close(y, torch.nn.functional.leaky_relu(x.detach(), slope))
    assert torch.autograd.gradcheck(fn, (x,))
    grad = torch.randn(2, 5, 3, 4, dtype=torch.float64, generator=gen).contiguous(memory_format=back)
    kept = grad.clone()
    (got,) = torch.autograd.grad(fn(x), x, grad)  # a gradient already in x's layout: not rewritten
    torch.testing.assert_close(grad, kept)
    torch.testing.assert_close(got, torch.where(x.detach() > 0, kept, kept * slope))
