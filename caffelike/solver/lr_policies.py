"""Caffe's learning-rate policies: pure functions of (SolverParameter, iter, current_step).

Each policy returns ``(rate, current_step)``; ``current_step`` is the counter Caffe keeps in
the solverstate (``step`` recomputes it, ``multistep`` advances it at most once per call).
Arithmetic follows ``SGDSolver::GetLearningRate`` (src/caffe/solvers/sgd_solver.cpp): the
proto's float fields are float32, ``pow(float, int)`` is evaluated in double, the float-only
formulas (inv, poly, sigmoid) in float32, and the result is stored as a float32 rate.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import SolverError

F32 = np.float32
PolicyFn = Callable[[object, int, int], "tuple[float, int]"]


def _f32(value: float) -> float:
    return float(F32(value))


def _require(ok: bool, param, what: str) -> None:
    if not ok:
        raise SolverError(f"lr_policy '{param.lr_policy}': {what}")


def fixed(param, it: int, step: int) -> tuple[float, int]:
    """base_lr."""
    return _f32(param.base_lr), step


def step_policy(param, it: int, step: int) -> tuple[float, int]:
    """base_lr * gamma ^ floor(iter / stepsize)."""
    _require(param.stepsize > 0, param, f"stepsize must be > 0, got {param.stepsize}")
    _require(param.gamma >= 0, param, f"gamma must be >= 0, got {param.gamma}")
    step = it // param.stepsize
    return _f32(param.base_lr * math.pow(param.gamma, step)), step


def exp_policy(param, it: int, step: int) -> tuple[float, int]:
    """base_lr * gamma ^ iter."""
    _require(param.gamma >= 0, param, f"gamma must be >= 0, got {param.gamma}")
    return _f32(param.base_lr * math.pow(param.gamma, it)), step


def inv(param, it: int, step: int) -> tuple[float, int]:
    """base_lr * (1 + gamma * iter) ^ (-power), in float32."""
    _require(param.gamma >= 0, param, f"gamma must be >= 0, got {param.gamma}")
    with np.errstate(all="ignore"):
        base = F32(1) + F32(param.gamma) * F32(it)
        return float(F32(param.base_lr) * np.power(base, -F32(param.power))), step


def multistep(param, it: int, step: int) -> tuple[float, int]:
    """base_lr * gamma ^ step, where step advances once iter reaches the next stepvalue."""
    if step < len(param.stepvalue) and it >= param.stepvalue[step]:
        step += 1
    _require(param.gamma >= 0, param, f"gamma must be >= 0, got {param.gamma}")
    return _f32(param.base_lr * math.pow(param.gamma, step)), step


def poly(param, it: int, step: int) -> tuple[float, int]:
    """base_lr * (1 - iter / max_iter) ^ power, in float32."""
    with np.errstate(all="ignore"):
        frac = F32(1) - F32(it) / F32(param.max_iter)
        return float(F32(param.base_lr) * np.power(frac, F32(param.power))), step


def sigmoid(param, it: int, step: int) -> tuple[float, int]:
    """base_lr / (1 + exp(-gamma * (iter - stepsize))), in float32."""
    _require(param.gamma >= 0, param, f"gamma must be >= 0, got {param.gamma}")
    _require(param.stepsize > 0, param, f"stepsize must be > 0, got {param.stepsize}")
    with np.errstate(all="ignore"):
        arg = -F32(param.gamma) * (F32(it) - F32(param.stepsize))
        return float(F32(param.base_lr) * (F32(1) / (F32(1) + np.exp(F32(arg))))), step


LR_POLICIES: dict[str, PolicyFn] = {
    "fixed": fixed,
    "step": step_policy,
    "exp": exp_policy,
    "inv": inv,
    "multistep": multistep,
    "poly": poly,
    "sigmoid": sigmoid,
}


def get_policy(name: str, where: str = "solver") -> PolicyFn:
    """The policy function for ``name``; SolverError naming the known ones otherwise."""
    try:
        return LR_POLICIES[name]
    except KeyError:
        known = ", ".join(LR_POLICIES)
        raise SolverError(f"{where}: unknown lr_policy '{name}'; known: {known}") from None
