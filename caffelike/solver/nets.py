"""Building a solver's train and test nets as Caffe's Solver::InitTrainNet/InitTestNets do.

The NetState of each net starts from the solver default (TRAIN or TEST), then merges the
net file's own ``state``, then ``train_state`` / ``test_state[i]`` (highest precedence).
Net files are read relative to the current directory, as in Caffe, each once: the parsed
NetParameter and its source map travel in the :class:`NetSource` to the ``Net``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import SolverError, Where
from ..glog import get_logger
from ..proto import caffe_pb2
from . import messages

log = get_logger("solver")

TRAIN, TEST = 0, 1


@dataclass
class NetSource:
    """One net: where it comes from, its NetParameter (read once) with the file's source map, its final state."""

    description: str
    path: str | None
    param: caffe_pb2.NetParameter
    source_map: Any
    state: caffe_pb2.NetState


NetFiles = dict[str, tuple[caffe_pb2.NetParameter, Any]]


def _read_net_file(path: str, files: NetFiles) -> tuple[caffe_pb2.NetParameter, Any]:
    """The parsed net file and its source map; a file named again (train and test) is not read again."""
    if path not in files:
        from ..io import read_net

        files[path] = read_net(path)
    return files[path]


def _merged_state(phase: int, file_state: caffe_pb2.NetState,
                  override: caffe_pb2.NetState | None) -> caffe_pb2.NetState:
    state = caffe_pb2.NetState(phase=phase)
    state.MergeFrom(file_state)
    if override is not None:
        state.MergeFrom(override)
    return state


def _where(solver_file: str | None) -> Where | None:
    return Where(file=solver_file) if solver_file else None


def train_net_source(param: caffe_pb2.SolverParameter, solver_file: str | None = None,
                     files: NetFiles | None = None) -> NetSource:
    """The train net of ``param`` (exactly one of net, net_param, train_net, train_net_param)."""
    fields = [f for f in ("net", "net_param", "train_net", "train_net_param") if param.HasField(f)]
    if len(fields) != 1:
        raise SolverError("the solver must specify exactly one train net with one of the fields "
                          f"net, net_param, train_net, train_net_param; found {len(fields)}"
                          + (f" ({', '.join(fields)})" if fields else ""), _where(solver_file))
    field = fields[0]
    if field.endswith("_param"):
        net_param = getattr(param, field)
        desc = f"specified in {field}."
        log.info(messages.creating_train_net(desc))
        return NetSource(desc, None, net_param, None, _merged_state(TRAIN, net_param.state, param.train_state))
    path = getattr(param, field)
    desc = f"from {'net' if field == 'net' else 'train_net'} file: {path}"
    log.info(messages.creating_train_net(desc))
    file_param, source_map = _read_net_file(path, files if files is not None else {})
    return NetSource(desc, path, file_param, source_map, _merged_state(TRAIN, file_param.state, param.train_state))


def test_net_sources(param: caffe_pb2.SolverParameter, solver_file: str | None = None,
                     files: NetFiles | None = None) -> list[NetSource]:
    """The test nets: test_net_param, then test_net files, then copies of net/net_param."""
    generic = int(param.HasField("net")) + int(param.HasField("net_param"))
    if generic > 1:
        raise SolverError("both net_param and net may not be specified", _where(solver_file))
    explicit = len(param.test_net_param) + len(param.test_net)
    if generic and len(param.test_iter) < explicit:
        raise SolverError(f"test_iter must be specified for each test net: {explicit} test nets, "
                          f"{len(param.test_iter)} test_iter", _where(solver_file))
    if not generic and len(param.test_iter) != explicit:
        raise SolverError(f"test_iter must be specified for each test net: {explicit} test nets, "
                          f"{len(param.test_iter)} test_iter", _where(solver_file))
    total = max(explicit, len(param.test_iter))
    if len(param.test_state) and len(param.test_state) != total:
        raise SolverError(f"test_state must be unspecified or given once per test net "
                          f"({total} test nets, {len(param.test_state)} test_state)", _where(solver_file))
    if total and param.test_interval <= 0:
        raise SolverError(f"test_interval must be > 0 when there are test nets (test_iter given); "
                          f"got {param.test_interval}", _where(solver_file))
    raw: list[tuple[str, str | None, caffe_pb2.NetParameter | None]] = []
    for p in param.test_net_param:
        raw.append(("test_net_param", None, p))
    for path in param.test_net:
        raw.append((f"test_net file: {path}", path, None))
    remaining = len(param.test_iter) - len(raw)
    for _ in range(remaining):
        if param.HasField("net_param"):
            raw.append(("net_param", None, param.net_param))
        elif param.HasField("net"):
            raw.append((f"net file: {param.net}", param.net, None))
    files = files if files is not None else {}
    sources = []
    for i, (desc, path, net_param) in enumerate(raw):
        source_map = None
        if net_param is None:
            net_param, source_map = _read_net_file(path, files)
        override = param.test_state[i] if len(param.test_state) else None
        sources.append(NetSource(desc, path, net_param, source_map, _merged_state(TEST, net_param.state, override)))
    return sources


def build_net(source: NetSource, device, index: int | None = None):
    """Construct the caffelike Net for ``source`` (a net file keeps file:line in errors)."""
    from ..net import Net

    if index is not None:
        log.info(messages.creating_test_net(index, source.description))
    net_param = caffe_pb2.NetParameter()
    net_param.CopyFrom(source.param)
    net_param.state.CopyFrom(source.state)
    return Net(net_param, source.state.phase, level=source.state.level, device=device,
               source_map=source.source_map)
