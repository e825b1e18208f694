"""pycaffe's process-wide mode (``set_mode_cpu``/``set_mode_gpu``/``set_device``) and seeding.

pycaffe keeps the CPU/GPU mode as global state; so do we, for API compatibility only. Every
caffelike object also takes an explicit ``device`` argument, which wins over this default.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from .errors import DeviceError

_state = {"gpu": False, "device_id": 0}


def set_mode_cpu() -> None:
    """Run new nets on the CPU (pycaffe's ``caffe.set_mode_cpu()``)."""
    _state["gpu"] = False


def set_mode_gpu() -> None:
    """Run new nets on the GPU chosen by :func:`set_device` (pycaffe's ``caffe.set_mode_gpu()``)."""
    _state["gpu"] = True


def set_device(device_id: int) -> None:
    """Choose the GPU used in GPU mode."""
    _state["device_id"] = int(device_id)


def default_device() -> torch.device:
    """The device new nets use when none is given."""
    return cuda_device(_state["device_id"]) if _state["gpu"] else torch.device("cpu")


def cuda_device(device_id: int) -> torch.device:
    """``cuda:<id>``, or a DeviceError saying why that GPU cannot be used."""
    if not torch.cuda.is_available():
        raise DeviceError(f"GPU {device_id} was requested but no CUDA device is available "
                          "(this torch build or machine has none); run on the CPU instead")
    if not 0 <= device_id < torch.cuda.device_count():
        raise DeviceError(f"GPU {device_id} was requested but only {torch.cuda.device_count()} "
                          "CUDA device(s) exist")
    return torch.device("cuda", device_id)


def set_random_seed(seed: int) -> None:
    """Seed every random generator caffelike uses (torch, numpy, random)."""
    seed = int(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


# -- pycaffe's multi-process settings (Caffe::solver_count, solver_rank, multiprocess) ------------
_parallel = {"solver_count": 1, "solver_rank": 0, "multiprocess": False}


def solver_count() -> int:
    """How many solvers train together (1 unless :func:`set_solver_count` was called)."""
    return _parallel["solver_count"]


def set_solver_count(count: int) -> None:
    """Set the number of solvers training together (pycaffe's multi-GPU scripts, with NCCL)."""
    _parallel["solver_count"] = int(count)


def solver_rank() -> int:
    """This process's solver rank (0 unless :func:`set_solver_rank` was called)."""
    return _parallel["solver_rank"]


def set_solver_rank(rank: int) -> None:
    """Set this process's solver rank; rank 0 is the root (tests, display, snapshots)."""
    _parallel["solver_rank"] = int(rank)


def multiprocess() -> bool:
    """Whether :func:`set_multiprocess` declared one process per solver."""
    return _parallel["multiprocess"]


def set_multiprocess(value: bool) -> None:
    """Declare that each solver runs in its own process (as pycaffe's train.py does)."""
    _parallel["multiprocess"] = bool(value)
