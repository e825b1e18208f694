"""Every update rule, L1/L2 regularisation, clipping and iter_size normalisation, without a net.

Expected values come from Caffe's documented formulas, written here independently in float64:
* order: ``SGDSolver::ApplyUpdate`` (src/caffe/solvers/sgd_solver.cpp): ClipGradients (global
  L2 norm of all diffs, scale by clip/norm when norm > clip) -> Normalize (1/iter_size) ->
  Regularize (L2: diff += wd*decay_mult*w; L1: diff += wd*decay_mult*sign(w)) ->
  ComputeUpdateValue (local_rate = rate*lr_mult) -> Net::Update (w -= diff);
* SGD (sgd_solver.cpp): v = momentum*v + local_rate*g; update = v;
* Nesterov (nesterov_solver.cpp): v' = momentum*v + local_rate*g; update = (1+momentum)*v' - momentum*v;
* AdaGrad (adagrad_solver.cpp): h += g^2; update = local_rate*g/(sqrt(h)+delta);
* RMSProp (rmsprop_solver.cpp): h = rms_decay*h + (1-rms_decay)*g^2; update = local_rate*g/(sqrt(h)+delta);
* AdaDelta (adadelta_solver.cpp): h1 = m*h1 + (1-m)*g^2; u = g*sqrt((h2+delta)/(h1+delta));
  h2 = m*h2 + (1-m)*u^2; update = local_rate*u; history = [h1..., h2...];
* Adam (adam_solver.cpp): m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; t = iter+1;
  update = local_rate*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps); history = [m..., v...].
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffelike.errors import SolverError
from caffelike.proto import caffe_pb2
from caffelike.solver.updates import Hyper, UPDATE_RULES, apply_update, check_hyper, get_rule


def _solver_param(**fields) -> caffe_pb2.SolverParameter:
    p = caffe_pb2.SolverParameter()
    for k, v in fields.items():
        setattr(p, k, v)
    return p


def _ref_rule(kind, g, hist, lr, hp, it):
    """One blob's update value and new history in float64 (formulas in the module docstring)."""
    m, b2, eps, rd = hp["momentum"], hp["momentum2"], hp["delta"], hp["rms_decay"]
    if kind == "SGD":
        v = m * hist[0] + lr * g
        return v, [v]
    if kind == "Nesterov":
        v = m * hist[0] + lr * g
        return (1 + m) * v - m * hist[0], [v]
    if kind == "AdaGrad":
        h = hist[0] + g * g
        return lr * g / (np.sqrt(h) + eps), [h]
    if kind == "RMSProp":
        h = rd * hist[0] + (1 - rd) * g * g
        return lr * g / (np.sqrt(h) + eps), [h]
    if kind == "AdaDelta":
        h1 = m * hist[0] + (1 - m) * g * g
        u = g * np.sqrt((hist[1] + eps) / (h1 + eps))
        h2 = m * hist[1] + (1 - m) * u * u
        return lr * u, [h1, h2]
    if kind == "Adam":
        mm = m * hist[0] + (1 - m) * g
        v = b2 * hist[1] + (1 - b2) * g * g
        t = it + 1
        corr = np.sqrt(1 - b2 ** t) / (1 - m ** t)
        return lr * corr * mm / (np.sqrt(v) + eps), [mm, v]
    raise AssertionError(kind)


def _ref_apply(kind, ws, gs, hists, lr_mults, decay_mults, rate, p, hp, it):
    gs = [g.copy() for g in gs]
    if p["clip"] >= 0:
        norm = np.sqrt(sum((g * g).sum() for g in gs))
        if norm > p["clip"]:
            gs = [g * (p["clip"] / norm) for g in gs]
    gs = [g / p["iter_size"] for g in gs]
    out_w, out_h = [], []
    for i, (w, g) in enumerate(zip(ws, gs)):
        decay = p["wd"] * decay_mults[i]
        g = g + decay * (w if p["reg"] == "L2" else np.sign(w))
        upd, h = _ref_rule(kind, g, [hh[i] for hh in hists], rate * lr_mults[i], hp, it)
        out_w.append(w - upd)
        out_h.append(h)
    n_sets = len(hists)
    return out_w, [[out_h[i][s] for i in range(len(ws))] for s in range(n_sets)]


HP = {
    "SGD": dict(momentum=0.9), "Nesterov": dict(momentum=0.9), "AdaGrad": dict(momentum=0.0),
    "RMSProp": dict(momentum=0.0, rms_decay=0.95), "AdaDelta": dict(momentum=0.95, delta=1e-6),
    "Adam": dict(momentum=0.9, momentum2=0.999, delta=1e-8),
}


@pytest.mark.parametrize("kind", list(UPDATE_RULES))
@pytest.mark.parametrize("reg,clip,iter_size", [("L2", -1.0, 1), ("L1", -1.0, 2), ("L2", 0.5, 1)])
def test_rule_matches_caffe_formula(kind, reg, clip, iter_size):
    rng = np.random.default_rng(7)
    shapes = [(4, 3), (4,), (2, 2, 2)]
    lr_mults, decay_mults = [1.0, 2.0, 0.0], [1.0, 0.0, 1.0]
    fields = dict(type=kind, weight_decay=0.01, regularization_type=reg, clip_gradients=clip,
                  iter_size=iter_size, **{k: v for k, v in HP[kind].items()})
    sp = _solver_param(**fields)
    hp = Hyper.from_param(sp)
    hpd = dict(momentum=hp.momentum, momentum2=hp.momentum2, delta=hp.delta, rms_decay=hp.rms_decay)
    rule = get_rule(kind)
    ws = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    data = [torch.from_numpy(w.copy()) for w in ws]
    hist_t = [torch.zeros(s) for _ in range(rule.history_sets) for s in shapes]
    ref_w = [w.astype(np.float64) for w in ws]
    ref_h = [[np.zeros(s) for s in shapes] for _ in range(rule.history_sets)]
    pd = dict(clip=clip, iter_size=iter_size, wd=np.float32(0.01).item(), reg=reg)
    for it in range(4):
        gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        rate = 0.1 * (0.5 ** it)
        diffs = [torch.from_numpy(g.copy()) for g in gs]
        apply_update(data, diffs, hist_t, lr_mults, decay_mults, rate, sp, rule, hp, it)
        ref_w, ref_h = _ref_apply(kind, ref_w, [g.astype(np.float64) for g in gs], ref_h,
                                  lr_mults, decay_mults, rate, pd, hpd, it)
    for got, want in zip(data, ref_w):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    flat_ref = [h for hs in ref_h for h in hs]
    assert len(hist_t) == len(flat_ref)  # Caffe's layout: N, or 2N for AdaDelta/Adam
    for got, want in zip(hist_t, flat_ref):
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5 * scale)


def test_lr_mult_zero_freezes_blob_even_with_decay():
    sp = _solver_param(type="SGD", momentum=0.9, weight_decay=0.1)
    w = torch.tensor([1.0, -2.0])
    hist = [torch.zeros(2)]
    apply_update([w], [torch.tensor([0.5, 0.5])], hist, [0.0], [1.0], 0.1, sp, get_rule("SGD"),
                 Hyper.from_param(sp), 0)
    assert w.tolist() == [1.0, -2.0] and hist[0].tolist() == [0.0, 0.0]


def test_sgd_first_step_exact_numbers():
    # v = 0.9*0 + 0.1*(g + 0.5*w) with g=1, w=2 -> 0.2; w = 2 - 0.2
    sp = _solver_param(type="SGD", momentum=0.9, weight_decay=0.5)
    w = torch.tensor([2.0])
    apply_update([w], [torch.tensor([1.0])], [torch.zeros(1)], [1.0], [1.0], 0.1, sp,
                 get_rule("SGD"), Hyper.from_param(sp), 0)
    assert w.item() == pytest.approx(1.8, rel=1e-6)


def test_clipping_reports_norm_and_scale():
    # ClipGradients: l2 = sqrt(3^2 + 4^2) = 5 > 1 -> scale 0.2
    sp = _solver_param(type="SGD", clip_gradients=1.0)
    w = [torch.zeros(1), torch.zeros(1)]
    got = apply_update(w, [torch.tensor([3.0]), torch.tensor([4.0])], [torch.zeros(1), torch.zeros(1)],
                       [1.0, 1.0], [1.0, 1.0], 1.0, sp, get_rule("SGD"), Hyper.from_param(sp), 0)
    assert got == pytest.approx((5.0, 0.2))
    assert [t.item() for t in w] == pytest.approx([-0.6, -0.8])


def test_unknown_type_and_sanity_checks():
    with pytest.raises(SolverError, match="unknown solver type 'Adamm'"):
        get_rule("Adamm")
    with pytest.raises(SolverError, match="momentum cannot be used with AdaGrad"):
        check_hyper("AdaGrad", _solver_param(momentum=0.9))
    with pytest.raises(SolverError, match="rms_decay"):
        check_hyper("RMSProp", _solver_param(rms_decay=1.0))


def test_fused_sgd_on_the_cpu_matches_the_step_by_step_update() -> None:
    """The CPU's fused kernel (regularise, SGD and w -= v in one pass, diff = v after) gives
    Caffe's values (the module docstring's formulas in float64) within float32 rounding, per
    lr_mult/decay_mult group, a zero rate included (the history then only decays)."""
    from caffelike.solver import updates

    gen = torch.Generator().manual_seed(3)
    shapes = [(6, 5), (6,), (4, 3, 2), (4,), (7,)]
    lr_mults, decay_mults = (1.0, 2.0, 1.0, 2.0, 0.0), (1.0, 0.0, 1.0, 0.0, 1.0)
    base_lr, wd, momentum = 0.01, 0.004, 0.9
    param = _solver_param(weight_decay=wd, momentum=momentum, clip_gradients=-1, iter_size=1,
                          regularization_type="L2")
    hp = Hyper.from_param(param)
    data = [torch.randn(s, generator=gen.manual_seed(i)) for i, s in enumerate(shapes)]
    history = [0.1 * torch.randn(s, generator=gen.manual_seed(10 + i)) for i, s in enumerate(shapes)]
    ref_w = [t.double().numpy().copy() for t in data]
    ref_v = [t.double().numpy().copy() for t in history]
    used = []
    real = updates.fused_sgd
    updates.fused_sgd = lambda *a: used.append(real(*a)) or used[-1]
    try:
        for step in range(3):
            diffs = [torch.randn(s, generator=gen.manual_seed(100 * step + i)) for i, s in enumerate(shapes)]
            for k, g in enumerate(diffs):
                d = g.double().numpy() + wd * decay_mults[k] * ref_w[k]
                ref_v[k] = momentum * ref_v[k] + base_lr * lr_mults[k] * d
                ref_w[k] = ref_w[k] - ref_v[k]
            apply_update(data, diffs, history, lr_mults, decay_mults, base_lr, param, get_rule("SGD"), hp, step)
            for d, h in zip(diffs, history):
                assert torch.equal(d, h)  # Caffe leaves the update value in the diff
    finally:
        updates.fused_sgd = real
    assert used == [True, True, True]  # the fused kernel did the updates
    for got, want in zip(data + history, ref_w + ref_v):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-7)
