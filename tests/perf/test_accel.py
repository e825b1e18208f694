"""caffelike.accel on the CPU: compiled forward vs eager, AMP switches, fp16 loss scaling.

No expected value here comes from caffelike's output alone: the compiled path is compared
with the eager path of the same net (a pure refactoring check), and the loss-scaled update
with the unscaled one; the eager path itself is pinned against Caffe in tests/net.
"""
from __future__ import annotations

import math

import pytest
import torch

import caffelike
from caffelike import accel
from caffelike.errors import CaffelikeError

from .tiny_net import SOLVER, TINY_TRAIN


@pytest.fixture
def tiny_files(tmp_path):
    net = tmp_path / "tiny.prototxt"
    net.write_text(TINY_TRAIN)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=net))
    return net, solver


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"data": torch.randn(4, 3, 8, 8, generator=gen),
            "label": torch.randint(0, 3, (4,), generator=gen).float()}


def test_compiled_forward_equals_eager(tiny_files):
    net = caffelike.Net(str(tiny_files[0]), caffelike.TEST)
    inputs = _inputs()
    with torch.no_grad():
        eager = net.run(inputs)
        compiled = accel.compile_net(net, install=True)
        got = net.run(inputs)  # through the installed runner
        direct = compiled(inputs)
    for name in ("conv1", "pool1", "ip1", "loss"):
        torch.testing.assert_close(got[name], eager[name], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(direct[name], eager[name], rtol=1e-4, atol=1e-5)
    accel.uncompile_net(net)
    with torch.no_grad():
        again = net.run(inputs)
    torch.testing.assert_close(again["loss"], eager["loss"], rtol=0, atol=0)


def test_amp_names():
    assert accel.amp_dtype(None) is None and accel.amp_dtype("off") is None
    assert accel.amp_dtype("bf16") is torch.bfloat16 and accel.amp_dtype("fp16") is torch.float16
    with pytest.raises(CaffelikeError, match="unknown -amp value 'fp8'"):
        accel.amp_dtype("fp8")
    assert not accel.make_loss_scaler("cpu", "fp16").enabled  # scaling is for CUDA fp16 only
    assert not accel.make_loss_scaler("cuda", "bf16").enabled


def test_bf16_autocast_forward_close_to_fp32(tiny_files):
    net = caffelike.Net(str(tiny_files[0]), caffelike.TEST)
    inputs = _inputs()
    with torch.no_grad():
        ref = net.run(inputs)["ip1"]
        with accel.autocast("cpu", "bf16"):
            low = net.run(inputs)["ip1"]
    assert low.dtype == torch.bfloat16
    # bf16 keeps 8 mantissa bits, and MAX pooling may pick another near-tied cell: compare on average
    err = (low.float() - ref).abs().mean() / ref.abs().max()
    assert err < 3e-2


def test_loss_scaled_step_equals_plain_step(tiny_files):
    """A scaled backward followed by unscaling gives Caffe's update (power-of-two scale: exact)."""
    plain = caffelike.get_solver(str(tiny_files[1]))
    scaled = caffelike.get_solver(str(tiny_files[1]))
    scaled.net.copy_from(plain.net.to_net_param())
    scaler = accel.LossScaler(init_scale=2.0 ** 10)
    for it in range(3):
        inputs = _inputs(it)
        a = plain.train_step(inputs)
        b = scaled.train_step(inputs, scaler=scaler)
        assert a == pytest.approx(b, rel=1e-6)
    for pa, pb in zip(plain.net.learnable_params, scaled.net.learnable_params):
        torch.testing.assert_close(pb.tensor, pa.tensor, rtol=1e-5, atol=1e-7)
    assert plain.iter == scaled.iter == 3


def test_overflow_skips_the_update(tiny_files):
    solver = caffelike.get_solver(str(tiny_files[1]))
    learned = [p for p in solver.net.learnable_params if p.lr_mult != 0]  # BatchNorm stats move in forward
    before = [p.tensor.detach().clone() for p in learned]
    scaler = accel.LossScaler(init_scale=float("inf"))  # every gradient overflows
    loss = solver.train_step(_inputs(), scaler=scaler)
    assert math.isnan(loss) and solver.iter == 1
    for p, old in zip(learned, before):
        torch.testing.assert_close(p.tensor.detach(), old, rtol=0, atol=0)


def test_scaler_backs_off_and_grows():
    p = torch.nn.Parameter(torch.zeros(3))
    scaler = accel.LossScaler(init_scale=8.0, growth_interval=2)
    p.grad = torch.tensor([8.0, float("inf"), 0.0])
    assert not scaler.unscale([p]) and scaler.scale == 4.0
    for _ in range(2):
        p.grad = torch.tensor([4.0, 8.0, 0.0])
        assert scaler.unscale([p])
    torch.testing.assert_close(p.grad, torch.tensor([1.0, 2.0, 0.0]))
    assert scaler.scale == 8.0


def test_channels_last_keeps_values(tiny_files):
    net = caffelike.Net(str(tiny_files[0]), caffelike.TEST)
    inputs = _inputs()
    with torch.no_grad():
        ref = net.run(inputs)["ip1"].clone()
        assert accel.use_channels_last(net) == 1
        got = net.run(accel.channels_last_inputs(inputs))["ip1"]
    assert net.params["conv1"][0].data.shape == (4, 3, 3, 3)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert not accel.channels_last_auto(net, "cpu", "bf16")
