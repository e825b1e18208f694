"""Every lr policy against Caffe's documented formulas.

Formulas: the comment block and body of ``SGDSolver<Dtype>::GetLearningRate`` in
src/caffe/solvers/sgd_solver.cpp (BVLC caffe 9b89154):
  fixed: base_lr; step: base_lr * gamma^floor(iter/stepsize); exp: base_lr * gamma^iter;
  inv: base_lr * (1 + gamma*iter)^(-power); multistep: base_lr * gamma^(#stepvalues passed);
  poly: base_lr * (1 - iter/max_iter)^power; sigmoid: base_lr / (1 + exp(-gamma*(iter - stepsize))).
"""
from __future__ import annotations

import math

import pytest

from caffelike.errors import SolverError
from caffelike.proto import caffe_pb2
from caffelike.solver.lr_policies import LR_POLICIES, get_policy


def _param(**fields) -> caffe_pb2.SolverParameter:
    p = caffe_pb2.SolverParameter()
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(p, k).extend(v)
        else:
            setattr(p, k, v)
    return p


def learning_rate(param: caffe_pb2.SolverParameter, it: int, step: int) -> tuple[float, int]:
    """The solver's lookup: the policy named by ``param.lr_policy``, at ``it``."""
    return get_policy(param.lr_policy)(param, it, step)


CASES = [
    # (fields, iter, expected formula)
    (dict(lr_policy="fixed", base_lr=0.01), 123, lambda: 0.01),
    (dict(lr_policy="step", base_lr=0.05, gamma=0.5, stepsize=12), 11, lambda: 0.05),
    (dict(lr_policy="step", base_lr=0.05, gamma=0.5, stepsize=12), 12, lambda: 0.025),
    (dict(lr_policy="step", base_lr=0.05, gamma=0.5, stepsize=12), 36, lambda: 0.05 * 0.5 ** 3),
    (dict(lr_policy="exp", base_lr=0.1, gamma=0.99), 50, lambda: 0.1 * 0.99 ** 50),
    (dict(lr_policy="inv", base_lr=0.01, gamma=1e-4, power=0.75), 1000,
     lambda: 0.01 * (1 + 1e-4 * 1000) ** -0.75),
    (dict(lr_policy="poly", base_lr=0.01, power=2.0, max_iter=100), 30, lambda: 0.01 * (1 - 0.3) ** 2),
    (dict(lr_policy="poly", base_lr=0.01, power=0.5, max_iter=100), 100, lambda: 0.0),
    (dict(lr_policy="sigmoid", base_lr=0.1, gamma=0.05, stepsize=100), 80,
     lambda: 0.1 / (1 + math.exp(-0.05 * (80 - 100)))),
    (dict(lr_policy="sigmoid", base_lr=0.1, gamma=0.0, stepsize=100), 7, lambda: 0.05),
]


@pytest.mark.parametrize("fields,it,expected", CASES, ids=lambda c: str(c)[:40])
def test_policy_formula(fields, it, expected):
    rate, _ = learning_rate(_param(**fields), it, 0)
    assert rate == pytest.approx(expected(), rel=1e-6, abs=1e-12)


def test_multistep_advances_once_per_stepvalue_and_keeps_current_step():
    # multistep: current_step advances by one when iter >= stepvalue[current_step]
    p = _param(lr_policy="multistep", base_lr=0.05, gamma=0.3, stepvalue=[10, 25])
    step, rates = 0, []
    for it in range(40):
        rate, step = learning_rate(p, it, step)
        rates.append(rate)
    assert step == 2
    assert rates[9] == pytest.approx(0.05) and rates[10] == pytest.approx(0.015)
    assert rates[24] == pytest.approx(0.015) and rates[25] == pytest.approx(0.05 * 0.09)


def test_step_sets_current_step():
    # step: current_step_ = iter / stepsize (sgd_solver.cpp)
    _, step = learning_rate(_param(lr_policy="step", base_lr=1, gamma=0.1, stepsize=7), 22, 0)
    assert step == 3


def test_golden_lr_columns_match():
    """The `lr` column of real Caffe's step and multistep runs (losses.csv)."""
    import csv
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1] / "golden" / "solvers"
    for case in ("sgd_step", "sgd_multistep_itersize2", "adam_fixed"):
        text = (root / case / "solver.prototxt").read_text()
        from google.protobuf import text_format
        p = text_format.Parse(text, caffe_pb2.SolverParameter())
        step = 0
        with open(root / case / "losses.csv") as f:
            for row in csv.DictReader(f):
                if not row["lr"]:
                    continue
                rate, step = learning_rate(p, int(row["iter"]), step)
                assert f"{rate:.6g}" == row["lr"], (case, row["iter"])


def test_unknown_policy_is_a_solver_error():
    with pytest.raises(SolverError, match="unknown lr_policy 'stepp'; known: fixed, step"):
        learning_rate(_param(lr_policy="stepp"), 0, 0)


def test_negative_gamma_is_refused_like_caffe():
    with pytest.raises(SolverError, match="gamma must be >= 0"):
        learning_rate(_param(lr_policy="sigmoid", gamma=-0.1, stepsize=10, base_lr=1), 0, 0)


def test_every_policy_is_covered():
    assert set(LR_POLICIES) == {"fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"}
