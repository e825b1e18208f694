"""Data-parallel training: one process per GPU (``-gpu 0,1`` / ``-gpu all``) or under torchrun.

Caffe's multi-GPU training (src/caffe/parallel.cpp, NCCL) runs one solver per GPU, each with
the prototxt's ``batch_size``; data layers read alternate items (rank, rank+N, ...), the
parameters are broadcast from the root at start, and after each backward the gradients are
summed over the GPUs and scaled by 1/N. Tests, display and snapshots happen on the root only.
We do the same with torch.distributed: NCCL on CUDA, gloo on the CPU.

* ``caffelike train -solver s.prototxt -gpu 0,1`` spawns one ``caffelike train`` per GPU
  (environment ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``);
* across machines, start it under torchrun, e.g. on each of 2 nodes with 4 GPUs:
  ``torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500
  -m caffelike train -solver s.prototxt -gpu all`` (each process uses GPU ``LOCAL_RANK``).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence

import torch

from ..glog import get_logger

log = get_logger("solver")


@dataclass(frozen=True)
class Rank:
    """This process's place in a distributed run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def from_environment() -> Rank | None:
    """The rank torchrun (or our launcher) set in the environment; None for a plain run."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    if world <= 1 or "RANK" not in os.environ:
        return None
    return Rank(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))


def init_group(rank: Rank, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA devices, gloo otherwise)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank.rank, world_size=rank.world_size)


def shutdown(wait: bool = True) -> None:
    """Leave the process group, if any, once every rank got here (``wait``).

    A gloo group is left to process exit: destroying it while the peer tears down its own
    sometimes aborts the process ("terminate called without an active exception").
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        if dist.get_backend() == "nccl":
            dist.destroy_process_group()


def broadcast_params(net) -> None:
    """Every learnable blob of ``net`` takes rank 0's values."""
    import torch.distributed as dist

    with torch.no_grad():
        for info in net.learnable_params:
            dist.broadcast(info.tensor.data, src=0)


def average_gradients(net, world: int) -> None:
    """Sum the learnable blobs' gradients over the ranks and scale by ``1/world`` (Caffe's NCCL)."""
    import torch.distributed as dist

    grads = [i.tensor.grad for i in net.learnable_params if i.tensor.grad is not None and i.lr_mult != 0]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.mul_(1.0 / world)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


class GradientAverager:
    """Solver callback: broadcast params at start-up, then average gradients every iteration."""

    def __init__(self, solver) -> None:
        self.solver = solver
        self.world = solver.world_size
        broadcast_params(solver.net)

    def on_start(self) -> None:
        pass

    def on_gradients_ready(self) -> None:
        average_gradients(self.solver.net, self.world)


def broadcast_flag(value: bool, device: torch.device) -> bool:
    """Rank 0's boolean, on every rank."""
    import torch.distributed as dist

    t = torch.tensor([1 if value else 0], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


ACTIONS = ("none", "stop", "snapshot")


def broadcast_action(action: str, device: torch.device) -> str:
    """Rank 0's requested action (signal), on every rank."""
    import torch.distributed as dist

    t = torch.tensor([ACTIONS.index(action)], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return ACTIONS[int(t.item())]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: Sequence[str], devices: Sequence[str]) -> int:
    """Run ``caffelike train argv`` once per device (a ``-gpu`` id or ``cpu``), wait for all.

    Each child gets ``-gpu <id>`` (or no -gpu for ``cpu``) and the rank environment; the
    exit status is the first non-zero child status, else 0.
    """
    port = str(_free_port())
    base = [a for a in _strip_gpu(argv)]
    procs = []
    for rank, dev in enumerate(devices):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(len(devices)), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(len(devices)), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        extra = [] if dev == "cpu" else ["-gpu", str(dev)]
        procs.append(subprocess.Popen([sys.executable, "-m", "caffelike", "train", *base, *extra], env=env))
    # Ctrl-C reaches every process of the group: the ranks act on it (rank 0 decides), so
    # the launcher itself only waits for them.
    import signal

    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _signals()}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return next((c for c in codes if c), 0)


def _signals() -> list:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return []
    return [s for s in (signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None]


def _strip_gpu(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.lstrip("-")
        if name == "gpu":
            skip = True
            continue
        if name.startswith("gpu="):
            continue
        out.append(a)
    return out
