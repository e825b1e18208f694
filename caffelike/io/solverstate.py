"""Binary SolverState files (.solverstate): iteration, lr step, weights file, history blobs."""
from __future__ import annotations

import os

from ..errors import WeightsError, Where
from ..proto import caffe_pb2
from .atomic import atomic_write


def read_solverstate(path: str | os.PathLike) -> caffe_pb2.SolverState:
    """Parse a .solverstate; ``WeightsError`` for a missing, empty, corrupt or foreign file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise WeightsError(f"cannot read solver state ({exc.strerror})", Where(file=path)) from None
    if not raw:
        raise WeightsError("empty solver state file; expected a binary SolverState",
                           Where(file=path))
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(raw)
    except Exception:  # protobuf's DecodeError (its class differs between runtimes)
        raise WeightsError("not a binary SolverState (.solverstate): truncated or corrupt "
                           "protobuf data", Where(file=path)) from None
    if not state.HasField("iter") and not len(state.history):
        raise WeightsError("not a binary SolverState (.solverstate): no iteration and no "
                           "history (a .caffemodel given as solver state?)", Where(file=path))
    return state


def write_solverstate(state: caffe_pb2.SolverState, path: str | os.PathLike) -> None:
    """Serialize ``state`` to ``path`` atomically (Caffe's WriteProtoToBinaryFile)."""
    data = state.SerializeToString()
    with atomic_write(path, "wb") as handle:
        handle.write(data)
