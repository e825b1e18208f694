"""Building a solver's train and test nets as Caffe's Solver::InitTrainNet/InitTestNets do.

The NetState of each net starts from the solver default (TRAIN or TEST), then merges the
net file's own ``state``, then ``train_state`` / ``test_state[i]`` (highest precedence).
Net files are read relative to the current directory, as in Caffe.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import SolverError, Where
from ..log import get_logger
from ..proto import caffe_pb2
from . import messages

log = get_logger("solver")

TRAIN, TEST = 0, 1


@dataclass
class NetSource:
    """Where one net comes from: a file path or an inline NetParameter, and its final state."""

    description: str
    path: str | None
    param: caffe_pb2.NetParameter | None
    state: caffe_pb2.NetState


def _read_net_param(path: str) -> caffe_pb2.NetParameter:
    from ..io import read_net

    return read_net(path)[0]


def _merged_state(phase: int, file_state: caffe_pb2.NetState,
                  override: caffe_pb2.NetState | None) -> caffe_pb2.NetState:
    state = caffe_pb2.NetState(phase=phase)
    state.MergeFrom(file_state)
    if override is not None:
        state.MergeFrom(override)
    return state


def _where(solver_file: str | None) -> Where | None:
    return Where(file=solver_file) if solver_file else None


def train_net_source(param: caffe_pb2.SolverParameter, solver_file: str | None = None) -> NetSource:
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
        return NetSource(desc, None, net_param, _merged_state(TRAIN, net_param.state, param.train_state))
    path = getattr(param, field)
    desc = f"from {'net' if field == 'net' else 'train_net'} file: {path}"
    log.info(messages.creating_train_net(desc))
    file_param = _read_net_param(path)
    return NetSource(desc, path, None, _merged_state(TRAIN, file_param.state, param.train_state))


def test_net_sources(param: caffe_pb2.SolverParameter, solver_file: str | None = None) -> list[NetSource]:
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
    sources = []
    for i, (desc, path, net_param) in enumerate(raw):
        file_state = (net_param.state if net_param is not None else _read_net_param(path).state)
        override = param.test_state[i] if len(param.test_state) else None
        sources.append(NetSource(desc, path, net_param, _merged_state(TEST, file_state, override)))
    return sources


def build_net(source: NetSource, device, index: int | None = None):
    """Construct the caffelike Net for ``source`` (its file keeps file:line in errors)."""
    from ..net import Net

    if index is not None:
        log.info(messages.creating_test_net(index, source.description))
    state = source.state
    if source.path is not None:
        # Net() extends the file's own stages with ``stages``: pass only the added ones.
        file_stages = list(_read_net_param(source.path).state.stage)
        extra = list(state.stage)[len(file_stages):]
        return Net(source.path, state.phase, level=state.level, stages=extra, device=device)
    net_param = caffe_pb2.NetParameter()
    net_param.CopyFrom(source.param)
    net_param.ClearField("state")
    return Net(net_param, state.phase, level=state.level, stages=list(state.stage), device=device)
