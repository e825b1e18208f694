"""Snapshots: ``<prefix>_iter_N.caffemodel`` + ``.solverstate`` (binary proto or HDF5).

Every file is written to a temporary name beside its target and renamed into place, so a
crash mid-write never leaves a torn snapshot. The solverstate holds Caffe's fields
(``SGDSolver::SnapshotSolverStateToBinaryProto`` / ``...ToHDF5`` in sgd_solver.cpp): ``iter``,
``learned_net`` (the model file name), ``current_step`` and the ``history`` blobs (shape +
data), in Caffe's order.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from ..errors import WeightsError
from ..io.atomic import atomic_write
from ..proto import caffe_pb2


@dataclass
class State:
    """The contents of a solverstate, whatever its format."""

    iter: int = 0
    learned_net: str | None = None
    current_step: int = 0
    history: list[np.ndarray] = field(default_factory=list)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def as_created(path: str) -> None:
    """Give a renamed temp file the mode a plain open() would have (mkstemp makes it 0600)."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~_current_umask())


def pending_name(path: str) -> str:
    """The hidden temporary name a snapshot file is written under before it is renamed."""
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.pending")


def snapshot_filename(prefix: str, it: int, extension: str) -> str:
    """Caffe's SnapshotFilename: ``<prefix>_iter_<N><extension>``."""
    return f"{prefix}_iter_{it}{extension}"


def blob_proto(array: np.ndarray) -> caffe_pb2.BlobProto:
    """A BlobProto with ``shape`` and float ``data``, as Caffe's Blob::ToProto writes it."""
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in array.shape)
    blob.data.extend(np.asarray(array, dtype=np.float32).ravel().tolist())
    return blob


def blob_array(blob: caffe_pb2.BlobProto) -> np.ndarray:
    """A BlobProto's data as float32, shaped by ``shape`` or the legacy 4-D dims."""
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    elif any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = (len(blob.data) or len(blob.double_data),)
    values = blob.data if len(blob.data) else blob.double_data
    return np.asarray(values, dtype=np.float32).reshape(shape)


def write_binary_state(state: State, path: str) -> None:
    """Write a binary SolverState (atomic)."""
    proto = caffe_pb2.SolverState()
    proto.iter = state.iter
    proto.learned_net = state.learned_net or ""
    proto.current_step = state.current_step
    for array in state.history:
        proto.history.append(blob_proto(array))
    with atomic_write(path, "wb") as handle:
        handle.write(proto.SerializeToString())
    as_created(path)


def write_hdf5_state(state: State, path: str) -> None:
    """Write an HDF5 solverstate: datasets iter, learned_net, current_step, group history/0..K-1."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("iter", data=np.array([state.iter], dtype=np.int32))
        h5.create_dataset("learned_net", data=np.bytes_(state.learned_net or ""))
        h5.create_dataset("current_step", data=np.array([state.current_step], dtype=np.int32))
        group = h5.create_group("history")
        for i, array in enumerate(state.history):
            group.create_dataset(str(i), data=np.asarray(array, dtype=np.float32))


def write_binary_model(net_param: caffe_pb2.NetParameter, path: str) -> None:
    """Write a NetParameter as a binary .caffemodel (atomic)."""
    with atomic_write(path, "wb") as handle:
        handle.write(net_param.SerializeToString())
    as_created(path)


def read_state(path: str) -> State:
    """Read a binary or HDF5 (``.h5``) solverstate written by Caffe or caffelike."""
    if not os.path.exists(path):
        raise WeightsError(f"{path}: solverstate file not found")
    if path.endswith(".h5"):
        return _read_hdf5_state(path)
    proto = caffe_pb2.SolverState()
    try:
        with open(path, "rb") as handle:
            proto.ParseFromString(handle.read())
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise WeightsError(f"{path}: not a binary SolverState ({exc}); expected a .solverstate "
                           "written by caffe or caffelike") from None
    history = []
    for i, blob in enumerate(proto.history):
        try:
            history.append(blob_array(blob))
        except ValueError:
            n = len(blob.data) or len(blob.double_data)
            shape = tuple(blob.shape.dim)
            raise WeightsError(f"{path}: history blob {i} has {n} values, its shape {shape} needs "
                               f"{int(np.prod(shape, dtype=np.int64))}") from None
    return State(iter=proto.iter, learned_net=proto.learned_net if proto.HasField("learned_net") else None,
                 current_step=proto.current_step, history=history)


def _read_hdf5_state(path: str) -> State:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            learned = None
            if "learned_net" in h5:
                raw = h5["learned_net"][()]
                learned = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = h5["history"]
            history = [np.asarray(group[str(i)], dtype=np.float32) for i in range(len(group))]
            return State(iter=int(np.asarray(h5["iter"]).ravel()[0]), learned_net=learned,
                         current_step=int(np.asarray(h5["current_step"]).ravel()[0]),
                         history=history)
    except (OSError, KeyError) as exc:
        raise WeightsError(f"{path}: not an HDF5 solverstate ({exc}); expected datasets iter, "
                           "current_step and group history") from None


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` that is renamed over it on success (for h5py)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
        as_created(path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def check_history(history: Sequence[np.ndarray], shapes: Sequence[tuple], path: str) -> None:
    """Caffe's CHECK on the number of history blobs, plus a size check per blob."""
    if len(history) != len(shapes):
        raise WeightsError(f"{path}: incorrect length of history blobs: the solverstate has "
                           f"{len(history)}, this solver and net need {len(shapes)}")
    for i, (array, shape) in enumerate(zip(history, shapes)):
        if array.size != int(np.prod(shape, dtype=np.int64)):
            raise WeightsError(f"{path}: history blob {i} has shape {tuple(array.shape)}, "
                               f"the net's parameter has {tuple(shape)}")
