"""The exact texts of Caffe's training log lines, and the patterns log readers rely on.

Caffe's glog lines are a de facto API: Caffe's ``tools/extra/parse_log.py``, ``parse_log.sh``
and countless grep scripts read them. The solver and the train/test commands format the lines
such readers look at through the functions here; caffelike's log parser
(:mod:`caffelike.logs.parse`) and the tests read them with the patterns at the end. Numbers
are printed as C++ ``ostream << float`` does (``%g`` with 6 significant digits).
"""
from __future__ import annotations

import re
from typing import Iterable


def num(value: float) -> str:
    """A float as ``std::ostream`` prints it by default (6 significant digits, %g)."""
    value = float(value)
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def shown(value: float) -> float:
    """The float a log line shows for ``value`` (:func:`num`'s digits read back)."""
    return float(num(value))


def initializing_solver(param_text: str) -> str:
    return f"Initializing solver from parameters: \n{param_text}"


def use_cpu() -> str:
    return "Use CPU."


def using_gpus(ids: Iterable[int]) -> str:
    return "Using GPUs " + ", ".join(str(i) for i in ids)


def gpu_name(device_id: int, name: str) -> str:
    return f"GPU {device_id}: {name}"


def creating_train_net(source: str) -> str:
    return f"Creating training net {source}"


def creating_test_net(index: int, source: str) -> str:
    return f"Creating test net (#{index}) specified by {source}"


def finetuning_from(path: str) -> str:
    return f"Finetuning from {path}"


def scaffolding_done() -> str:
    return "Solver scaffolding done."


def resuming_from(path: str) -> str:
    return f"Resuming from {path}"


def restoring(path: str) -> str:
    return f"Restoring previous solver status from {path}"


def restoring_history() -> str:
    return "SGDSolver: restoring history"


def starting() -> str:
    return "Starting Optimization"


def solving(net_name: str) -> str:
    return f"Solving {net_name}"


def lr_policy(policy: str) -> str:
    return f"Learning Rate Policy: {policy}"


def iteration_loss(it: int, per_s: float, lapse: float, display: int, loss: float) -> str:
    return f"Iteration {it} ({num(per_s)} iter/s, {num(lapse)}s/{display} iters), loss = {num(loss)}"


def _weighted(value: float, loss_weight: float) -> str:
    return f" (* {num(loss_weight)} = {num(loss_weight * value)} loss)" if loss_weight else ""


def train_output(index: int, name: str, value: float, loss_weight: float) -> str:
    return f"    Train net output #{index}: {name} = {num(value)}{_weighted(value, loss_weight)}"


def iteration_lr(it: int, rate: float) -> str:
    return f"Iteration {it}, lr = {num(rate)}"


def multistep_status(it: int, step: int) -> str:
    return f"MultiStep Status: Iteration {it}, step = {step}"


def gradient_clipping(l2norm: float, clip: float, scale: float) -> str:
    return (f"Gradient clipping: scaling down gradients (L2 norm {num(l2norm)} > {num(clip)}) "
            f"by scale factor {num(scale)}")


def testing(it: int, net_index: int) -> str:
    return f"Iteration {it}, Testing net (#{net_index})"


def test_loss(loss: float) -> str:
    return f"Test loss: {num(loss)}"


def test_output(index: int, name: str, value: float, loss_weight: float) -> str:
    return f"    Test net output #{index}: {name} = {num(value)}{_weighted(value, loss_weight)}"


def test_interrupted() -> str:
    return "Test interrupted."


def snapshot_model(path: str, hdf5: bool) -> str:
    kind = "HDF5 file" if hdf5 else "binary proto file"
    return f"Snapshotting to {kind} {path}"


def snapshot_state(path: str, hdf5: bool) -> str:
    kind = "HDF5 file" if hdf5 else "binary proto file"
    return f"Snapshotting solver state to {kind} {path}"


def final_loss(it: int, loss: float) -> str:
    return f"Iteration {it}, loss = {num(loss)}"


def stopped_early() -> str:
    return "Optimization stopped early."


def done() -> str:
    return "Optimization Done."


# ``caffe test`` and ``caffe time``
def use_gpu(device_id: int) -> str:
    return f"Use GPU with device ID {device_id}"


def gpu_device_name(name: str) -> str:
    return f"GPU device name: {name}"


def running_for(iterations: int) -> str:
    return f"Running for {iterations} iterations."


def batch_output(batch: int, name: str, value: float) -> str:
    return f"Batch {batch}, {name} = {num(value)}"


def mean_output(name: str, value: float, loss_weight: float) -> str:
    return f"{name} = {num(value)}{_weighted(value, loss_weight)}"


def plain_loss(loss: float) -> str:
    return f"Loss: {num(loss)}"


# The patterns Caffe's parse_log.py / extract_seconds.py rely on (re-stated here, not copied):
# a glog prefix whose first token is a level letter + MMDD and whose second is hh:mm:ss.micro;
# a line containing "Solving" marks the start time; "Iteration N" sets the current iteration;
# "lr = X" the learning rate; "Train net output #k: name = X" and "Test net output #k: name = X"
# the table cells.
# GLOG_PREFIX is the prefix caffelike writes; GLOG_STAMP is what a reader accepts: any severity
# letter, glog >= 0.6's year before MMDD, and leading blanks.
GLOG_PREFIX = re.compile(r"^[IWEF](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{6}) +\d+ [^ \]]+:\d+\] ")
GLOG_STAMP = re.compile(r"^\s*\S(\d{4})?(\d\d)(\d\d) (\d+):(\d+):(\d+)\.(\d+)\s")
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
ITERATION = re.compile(r"Iteration (\d+)")
LEARNING_RATE = re.compile(r"lr = (" + NUMBER + r")")
TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = (" + NUMBER + r")")
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = (" + NUMBER + r")")
TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
ITERATION_LOSS = re.compile(r"Iteration (\d+) \(.* iter/s, .*s/(\d+) iters\), loss = (" + NUMBER + r")")
START = "Solving"
