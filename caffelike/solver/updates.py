"""Caffe's update rules, one function each, over all learnable blobs at once.

The order is ``SGDSolver::ApplyUpdate`` (src/caffe/solvers/sgd_solver.cpp): clip the raw
accumulated diffs by their global L2 norm, then per blob normalise by 1/iter_size,
regularise (L2 or L1, ``weight_decay * decay_mult``), and compute the update value with
``rate * lr_mult``; finally ``data -= diff``. Each rule writes its update value into the diff
tensors in place, as Caffe's ComputeUpdateValue does, with Caffe's float32 operation order
(each product rounded before the sum, as the non-FMA BLAS axpby). History blobs are in
Caffe's layout: one per blob, and for AdaDelta and Adam a second set appended after the
first N (``AdaDeltaPreSolve`` / ``AdamPreSolve``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import SolverError
from ..foreach import mul_

Tensors = Sequence[torch.Tensor]


def f32(value: float) -> float:
    """``value`` rounded to float32 (Caffe's Dtype), as a Python float."""
    return float(np.float32(value))


@dataclass(frozen=True)
class Hyper:
    """The SolverParameter fields the update rules read (float32 values)."""

    momentum: float = 0.0
    momentum2: float = 0.999
    delta: float = 1e-8
    rms_decay: float = 0.99

    @classmethod
    def from_param(cls, param) -> "Hyper":
        return cls(momentum=f32(param.momentum), momentum2=f32(param.momentum2),
                   delta=f32(param.delta), rms_decay=f32(param.rms_decay))


def _scaled(tensors: Tensors, scalars: Sequence[float]) -> list[torch.Tensor]:
    return list(torch._foreach_mul(list(tensors), list(scalars)))


@functools.lru_cache(maxsize=64)
def _groups(scalars: tuple) -> tuple[tuple[Any, tuple[int, ...] | None], ...]:
    """The blob indices of each distinct scalar (or tuple of scalars), in first-seen order
    (None: every blob)."""
    groups: dict[Any, list[int]] = {}
    for i, scalar in enumerate(scalars):
        groups.setdefault(scalar if isinstance(scalar, tuple) else float(scalar), []).append(i)
    if len(groups) == 1:
        return ((next(iter(groups)), None),)
    return tuple((scalar, tuple(idx)) for scalar, idx in groups.items())


def _add_scaled_(ys: list[torch.Tensor], xs: Sequence[torch.Tensor], scalars: Sequence[float]) -> None:
    """y += s*x per blob, one fused foreach call per distinct s (usually one or two: the
    lr_mult / decay_mult values of weights and biases), with no temporaries."""
    for scalar, idx in _groups(tuple(scalars)):
        if idx is None:
            torch._foreach_add_(list(ys), list(xs), alpha=scalar)
        else:
            torch._foreach_add_([ys[i] for i in idx], [xs[i] for i in idx], alpha=scalar)


@functools.lru_cache(maxsize=64)
def local_values(value: float, mults: tuple[float, ...]) -> tuple[float, ...]:
    """Caffe's per-blob ``value * mult`` in float32 (local rate or local decay), memoised:
    the solver asks for the same few values every iteration."""
    return tuple(f32(value * f32(m)) for m in mults)


def _axpby_(y: Tensors, a: Sequence[float] | float, x: Tensors, b: float) -> None:
    """y = a*x + b*y, each product rounded first (Caffe's caffe_cpu_axpby)."""
    y = list(y)
    mul_(y, b)
    ax = _scaled(x, a) if not isinstance(a, float) else list(torch._foreach_mul(list(x), a))
    torch._foreach_add_(y, ax)


# ---------------------------------------------------------------- ApplyUpdate's first steps

def clip_gradients(diffs: Tensors, clip: float) -> tuple[float, float] | None:
    """Scale all diffs by clip / ||diffs||_2 when that norm exceeds ``clip`` (< 0: off).

    Returns ``(l2norm, scale)`` when it clipped (for Caffe's log line), else None.
    """
    if clip < 0 or not diffs:
        return None
    sumsq = np.float32(torch.stack([torch.dot(d.reshape(-1), d.reshape(-1)) for d in diffs]).sum().item())
    l2norm = np.float32(math.sqrt(float(sumsq)))
    if l2norm > np.float32(clip):
        scale = float(np.float32(clip) / l2norm)
        mul_(list(diffs), scale)
        return float(l2norm), scale
    return None


def normalize(diffs: Tensors, iter_size: int) -> None:
    """Divide the accumulated diffs by iter_size (Caffe's Normalize)."""
    if iter_size != 1:
        mul_(list(diffs), f32(1.0 / iter_size))


def regularize(diffs: Tensors, data: Tensors, decays: Sequence[float], kind: str) -> None:
    """diff += local_decay * data (L2) or local_decay * sign(data) (L1), per blob."""
    picked = [(d, w, a) for d, w, a in zip(diffs, data, decays) if a != 0]
    if not picked:
        return
    ds, ws, alphas = (list(t) for t in zip(*picked))
    if kind == "L2":
        _add_scaled_(ds, ws, alphas)
    elif kind == "L1":
        _add_scaled_(ds, [torch.sign(w) for w in ws], alphas)
    else:
        raise SolverError(f"unknown regularization_type '{kind}'; known: L2, L1")


# ---------------------------------------------------------------- ComputeUpdateValue rules

def sgd(diffs: Tensors, history: list[torch.Tensor], rates: Sequence[float], hp: Hyper,
        it: int) -> None:
    """v = momentum*v + local_rate*g; update = v (SGDSolver::ComputeUpdateValue)."""
    n = len(diffs)
    hist = history[:n]
    if hp.momentum != 1.0:
        mul_(hist, hp.momentum)
    _add_scaled_(hist, diffs, rates)
    torch._foreach_copy_(list(diffs), hist)


def fused_sgd(diffs: Tensors, data: Tensors, history: list[torch.Tensor], rates: Sequence[float],
              decays: Sequence[float], hp: Hyper) -> bool:
    """Regularise (L2), SGD and ``data -= update`` in torch's fused SGD kernel, one call per
    (local rate, local decay) group: v = momentum*v + rate*(g + decay*w), w -= v, then
    diff = v as Caffe leaves it. Three passes over the blobs instead of nine, the same
    formula (within float rounding: the rate divides the gradient as ``1 / rate``; a zero
    rate divides it by infinity). False (nothing done) where it does not apply: no momentum
    (Caffe still keeps the last update as history), a torch without the kernel, or blobs off
    the CPU (the path measured and tested here; a GPU keeps the foreach update)."""
    if hp.momentum == 0.0 or not data or data[0].device.type != "cpu" or not _fused_sgd_available():
        return False
    n = len(diffs)
    hist = history[:n]
    for (rate, decay), idx in _groups(tuple(zip(rates, decays))):
        pick = (lambda ts: list(ts)) if idx is None else (lambda ts: [ts[i] for i in idx])
        ws = pick(data)
        torch._fused_sgd_(ws, pick(diffs), pick(hist), weight_decay=f32(rate * decay), momentum=hp.momentum,
                          lr=1.0, dampening=0.0, nesterov=False, maximize=False, is_first_step=False,
                          grad_scale=_inverse(rate, ws[0].device), found_inf=None)
    torch._foreach_copy_(list(diffs), hist)
    return True


@functools.lru_cache(maxsize=1)
def _fused_sgd_available() -> bool:
    """Whether this torch has a CPU ``_fused_sgd_`` with the signature used here and the
    expected result (setup.py allows torch versions older than its CPU kernel)."""
    try:
        w, g, v = torch.ones(3), torch.full((3,), 2.0), torch.full((3,), 0.5)
        torch._fused_sgd_([w], [g], [v], weight_decay=0.25, momentum=0.5, lr=1.0, dampening=0.0,
                          nesterov=False, maximize=False, is_first_step=False,
                          grad_scale=torch.tensor(0.5), found_inf=None)
    except (AttributeError, RuntimeError, TypeError, NotImplementedError):
        return False
    # v = 0.5*0.5 + (2/0.5 + 0.25*1) = 4.5, w = 1 - 4.5
    return bool(torch.equal(v, torch.full((3,), 4.5)) and torch.equal(w, torch.full((3,), -3.5)))


@functools.lru_cache(maxsize=64)
def _inverse(rate: float, device: torch.device) -> torch.Tensor:
    """1 / rate as the fused kernel's ``grad_scale`` (which divides the gradient)."""
    return torch.tensor(1.0 / rate if rate else float("inf"), dtype=torch.float32, device=device)


def nesterov(diffs: Tensors, history: list[torch.Tensor], rates: Sequence[float], hp: Hyper,
             it: int) -> None:
    """v' = momentum*v + local_rate*g; update = (1+momentum)*v' - momentum*v (nesterov_solver.cpp)."""
    n = len(diffs)
    hist = history[:n]
    old = [h.clone() for h in hist]
    _axpby_(hist, rates, diffs, hp.momentum)
    _axpby_(old, f32(1.0 + hp.momentum), hist, -hp.momentum)
    torch._foreach_copy_(list(diffs), old)


def adagrad(diffs: Tensors, history: list[torch.Tensor], rates: Sequence[float], hp: Hyper,
            it: int) -> None:
    """h += g^2; update = local_rate * g / (sqrt(h) + delta) (adagrad_solver.cpp)."""
    n = len(diffs)
    hist = history[:n]
    sq = list(torch._foreach_mul(list(diffs), list(diffs)))
    torch._foreach_add_(sq, hist)
    torch._foreach_copy_(hist, sq)
    denom = list(torch._foreach_sqrt(hist))
    torch._foreach_add_(denom, hp.delta)
    _finish(diffs, torch._foreach_div(list(diffs), denom), rates)


def rmsprop(diffs: Tensors, history: list[torch.Tensor], rates: Sequence[float], hp: Hyper,
            it: int) -> None:
    """h = rms_decay*h + (1-rms_decay)*g^2; update = local_rate * g / (sqrt(h) + delta)."""
    n = len(diffs)
    hist = history[:n]
    sq = list(torch._foreach_mul(list(diffs), list(diffs)))
    _axpby_(hist, f32(1.0 - hp.rms_decay), sq, hp.rms_decay)
    denom = list(torch._foreach_sqrt(hist))
    torch._foreach_add_(denom, hp.delta)
    _finish(diffs, torch._foreach_div(list(diffs), denom), rates)


def adadelta(diffs: Tensors, history: list[torch.Tensor], rates: Sequence[float], hp: Hyper,
             it: int) -> None:
    """AdaDelta with history of g^2 (first N) and of update^2 (second N), adadelta_solver.cpp."""
    n = len(diffs)
    grad_hist, upd_hist = history[:n], history[n:2 * n]
    m = hp.momentum
    sq = list(torch._foreach_mul(list(diffs), list(diffs)))
    _axpby_(grad_hist, f32(1.0 - m), sq, m)
    num = list(torch._foreach_add(upd_hist, hp.delta))
    den = list(torch._foreach_add(grad_hist, hp.delta))
    ratio = list(torch._foreach_sqrt(torch._foreach_div(num, den)))
    torch._foreach_mul_(list(diffs), ratio)
    sq = list(torch._foreach_mul(list(diffs), list(diffs)))
    _axpby_(upd_hist, f32(1.0 - m), sq, m)
    torch._foreach_mul_(list(diffs), list(rates))


def adam(diffs: Tensors, history: list[torch.Tensor], rates: Sequence[float], hp: Hyper,
         it: int) -> None:
    """m, v moments (first and second N history blobs); bias correction folded into the rate."""
    n = len(diffs)
    ms, vs = history[:n], history[n:2 * n]
    b1, b2 = hp.momentum, hp.momentum2
    t = it + 1
    correction = f32(math.sqrt(1.0 - math.pow(b2, t)) / (1.0 - math.pow(b1, t)))
    _axpby_(ms, f32(1.0 - b1), diffs, b1)
    sq = list(torch._foreach_mul(list(diffs), list(diffs)))
    _axpby_(vs, f32(1.0 - b2), sq, b2)
    denom = list(torch._foreach_sqrt(vs))
    torch._foreach_add_(denom, hp.delta)
    step = list(torch._foreach_div(ms, denom))
    _finish(diffs, step, [f32(r * correction) for r in rates])


def _finish(diffs: Tensors, values, rates: Sequence[float]) -> None:
    """diff = local_rate * value."""
    torch._foreach_copy_(list(diffs), _scaled(values, rates))


UpdateFn = Callable[[Tensors, list, Sequence[float], Hyper, int], None]


@dataclass(frozen=True)
class Rule:
    """An update rule, how many history sets (of N blobs) it keeps, and the checks its
    solver's constructor makes on the SolverParameter (``check`` raises a SolverError)."""

    fn: UpdateFn
    history_sets: int = 1
    no_momentum: bool = False
    check: Callable[[Any], None] | None = None
    # a blob of local rate 0 whose history is zero gets a zero update and keeps a zero history
    # (Caffe's axpby/axpy with a zero factor leave the history as it is), so it can be left out
    zero_rate_is_no_op: bool = False


def _check_rms_decay(param) -> None:
    if not 0 <= param.rms_decay < 1:
        raise SolverError(f"solver type RMSProp: rms_decay should lie in [0, 1), got {param.rms_decay}")


# Caffe's solver types. A new one is an update function above and an entry here: the
# SolverParameter ``type`` string, pycaffe's ``caffe.<type>Solver`` class and the solverstate's
# history length all follow from this table.
UPDATE_RULES: dict[str, Rule] = {
    "SGD": Rule(sgd, zero_rate_is_no_op=True),
    "Nesterov": Rule(nesterov, zero_rate_is_no_op=True),
    "AdaGrad": Rule(adagrad, no_momentum=True),
    "RMSProp": Rule(rmsprop, no_momentum=True, check=_check_rms_decay),
    "AdaDelta": Rule(adadelta, history_sets=2),
    "Adam": Rule(adam, history_sets=2),
}


def get_rule(name: str) -> Rule:
    """The update rule for solver type ``name``; SolverError naming the known ones otherwise."""
    try:
        return UPDATE_RULES[name]
    except KeyError:
        raise SolverError(f"unknown solver type '{name}'; known: {', '.join(UPDATE_RULES)}") from None


def check_hyper(name: str, param) -> None:
    """Caffe's constructor sanity checks (include/caffe/sgd_solvers.hpp)."""
    rule = get_rule(name)
    if rule.no_momentum and param.momentum != 0:
        raise SolverError(f"solver type {name}: momentum cannot be used with {name} "
                          f"(got momentum: {param.momentum}); remove it")
    if rule.check is not None:
        rule.check(param)


def apply_update(data: Tensors, diffs: Tensors, history: list[torch.Tensor],
                 lr_mults: Sequence[float], decay_mults: Sequence[float], rate: float,
                 param, rule: Rule, hp: Hyper, it: int) -> tuple[float, float] | None:
    """Caffe's ApplyUpdate after the rate: clip, normalise, regularise, update, data -= diff.

    ``data``/``diffs`` are the learnable blobs and their accumulated gradients (modified in
    place); returns the clipping ``(l2norm, scale)`` if it clipped.
    """
    if not data:
        return None
    with torch.no_grad():
        clipped = clip_gradients(diffs, float(param.clip_gradients))
        normalize(diffs, int(param.iter_size))
        decays = local_values(f32(param.weight_decay), tuple(decay_mults))
        rates = local_values(rate, tuple(lr_mults))
        if rule.fn is sgd and param.regularization_type == "L2" and fused_sgd(diffs, data, history, rates,
                                                                              decays, hp):
            return clipped
        regularize(diffs, data, decays, param.regularization_type)
        rule.fn(diffs, history, rates, hp, it)
        torch._foreach_sub_(list(data), list(diffs))
    return clipped
