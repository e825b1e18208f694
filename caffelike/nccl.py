"""pycaffe's ``caffe.has_nccl()`` and ``caffe.NCCL``: multi-GPU training from Python scripts.

Caffe's ``python/train.py`` pattern, one process per GPU::

    uid = caffe.NCCL.new_uid()                  # once, in the parent
    # in each child:
    caffe.set_device(gpu); caffe.set_mode_gpu()
    caffe.set_solver_count(n); caffe.set_solver_rank(rank); caffe.set_multiprocess(True)
    solver = caffe.SGDSolver(solver_file)
    nccl = caffe.NCCL(solver, uid)
    nccl.bcast()                                # rank 0's weights everywhere
    solver.add_callback(nccl)                   # gradients summed, scaled by 1/n, each step
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
    solver.step(...)

Here NCCL is torch.distributed's: :func:`has_nccl` is True when torch has CUDA and its NCCL
backend. Without it (a CPU build) ``NCCL(solver, uid)`` constructs and does nothing, as in a
CPU build of Caffe, while ``new_uid``/``bcast``, which such a Caffe lacks, raise a clear error.
The reduction runs once per iteration when the solver's gradients are ready; the per-layer
``after_backward`` call is accepted and does nothing (the result is the same).
"""
from __future__ import annotations

import os
import tempfile
import uuid
from typing import Any

import torch

from .errors import DeviceError
from .mode import solver_count, solver_rank

__all__ = ["has_nccl", "NCCL"]

_UID_PREFIX = "file://"


def has_nccl() -> bool:
    """True when this torch build can run NCCL (CUDA devices and the NCCL backend)."""
    if not torch.cuda.is_available():
        return False
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_nccl_available())


def _unavailable(what: str) -> DeviceError:
    return DeviceError(f"caffe.NCCL.{what} needs NCCL, which this torch build lacks (has_nccl() is False: "
                       "no CUDA or no NCCL backend), as in a CPU build of Caffe; on one machine "
                       "`caffelike train -gpu 0,1` trains on several GPUs")


class NCCL:
    """Caffe's NCCL object for one solver of a ``solver_count()``-process group."""

    def __init__(self, solver: Any, uid: bytes | str) -> None:
        self.solver = solver
        self.uid = uid.decode() if isinstance(uid, bytes) else str(uid)
        if not has_nccl():
            return  # a CPU build's NCCL: constructed, never used
        import torch.distributed as dist

        if not dist.is_initialized():
            if solver.device.type == "cuda":
                torch.cuda.set_device(solver.device)
            dist.init_process_group("nccl", init_method=self.uid, rank=solver_rank(),
                                    world_size=solver_count())

    @staticmethod
    def new_uid() -> bytes:
        """A fresh id (bytes) for the processes of one group to meet by (a rendezvous file)."""
        if not has_nccl():
            raise _unavailable("new_uid()")
        path = os.path.join(tempfile.gettempdir(), f"caffelike-nccl-{uuid.uuid4().hex}")
        return (_UID_PREFIX + path).encode()

    def bcast(self) -> None:
        """Give every solver rank 0's weights."""
        if not has_nccl():
            raise _unavailable("bcast()")
        from .solver.distributed import broadcast_params

        broadcast_params(self.solver.net)

    # -- solver callback (Caffe's Solver::Callback) and net callback -----------------------------
    def on_start(self) -> None:
        """Nothing to do before an iteration."""

    def on_gradients_ready(self) -> None:
        """Sum the gradients over the solvers and scale them by ``1/solver_count()``."""
        if has_nccl() and solver_count() > 1:
            from .solver.distributed import average_gradients

            average_gradients(self.solver.net, solver_count())

    def __call__(self, layer: int) -> None:
        """``net.after_backward(nccl)``: the reduction happens in :meth:`on_gradients_ready`."""
