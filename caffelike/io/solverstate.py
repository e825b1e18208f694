"""Binary SolverState files (.solverstate): iteration, lr step, weights file, history blobs."""
from __future__ import annotations

import os

from ..errors import WeightsError, Where
from ..proto import caffe_pb2
from .binfile import parse_binary, read_file_bytes, write_binary_proto


def read_solverstate(path: str | os.PathLike) -> caffe_pb2.SolverState:
    """Parse a .solverstate; ``WeightsError`` for a missing, empty, corrupt or foreign file."""
    path = os.fspath(path)
    raw = read_file_bytes(path, "solver state")
    if not raw:
        raise WeightsError("empty solver state file; expected a binary SolverState",
                           Where(file=path))
    what = "SolverState (.solverstate)"
    state = parse_binary(caffe_pb2.SolverState(), raw, path, what)
    if not state.HasField("iter") and not len(state.history):
        raise WeightsError(f"not a binary {what}: no iteration and no history (a .caffemodel "
                           "given as solver state?)", Where(file=path))
    return state


def write_solverstate(state: caffe_pb2.SolverState, path: str | os.PathLike) -> None:
    """Serialize ``state`` to ``path`` atomically (Caffe's WriteProtoToBinaryFile)."""
    write_binary_proto(state, path)
