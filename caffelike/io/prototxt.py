"""Text-format protobuf files (net and solver prototxts): parse, locate, write.

protobuf's own text parser does the parsing, so every file real Caffe reads is read the same
way. Around it this module adds:

* one-line errors ``file:line:col: ...`` for syntax errors and unknown fields (with the option
  to skip the fields of Caffe forks, one warning per skipped field);
* a pre-scan of the text (:func:`layer_lines`) that finds each top-level ``layer {`` /
  ``layers {`` block, its line, name and type, so that later errors (unknown layer type,
  unknown bottom, bad parameter) can name ``file:line`` and the layer (:class:`SourceMap`);
* :func:`read_net` / :func:`read_solver`, which also apply Caffe's legacy upgrades;
* :func:`write_text_proto` / :func:`to_text`, spelling numbers as C++ TextFormat does, so an
  upgraded net is byte-identical to what Caffe's upgrade_net_proto_text writes.
"""
from __future__ import annotations

import bisect
import contextlib
import contextvars
import io
import math
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ..errors import PrototxtError, Where
from ..glog import get_logger
from ..proto import caffe_pb2
from .atomic import atomic_write
from .binfile import read_file_bytes

log = get_logger("io")

M = TypeVar("M", bound=Message)

SKIP_HINT = ("use --allow-unknown-fields / allow_unknown_fields=True "
             "to skip fields from Caffe forks")

_ALLOW_UNKNOWN: contextvars.ContextVar[bool] = contextvars.ContextVar("allow_unknown_fields",
                                                                    default=False)


@contextlib.contextmanager
def unknown_fields_allowed(enabled: bool = True) -> Iterator[None]:
    """Within this block, prototxt reads that do not say otherwise skip unknown fields.

    The CLI's ``--allow-unknown-fields`` wraps a whole command in it, so the solver file and
    every net it names are read the same way.
    """
    token = _ALLOW_UNKNOWN.set(enabled)
    try:
        yield
    finally:
        _ALLOW_UNKNOWN.reset(token)


# -- the pre-scan ------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)
  | (?P<open>[{<])
  | (?P<close>[}>])
  | (?P<colon>:)
  | (?P<word>[^\s{}<>:\#"',;\[\]]+)
  | (?P<other>.)
""", re.VERBOSE)

_LAYER_FIELDS = ("layer", "layers")


@dataclass
class LayerBlock:
    """One top-level ``layer {`` (or legacy ``layers {``) block of a net prototxt."""

    index: int          # position among the blocks of the same field (layer or layers)
    field: str          # "layer" or "layers"
    line: int           # line of the field name (1-based)
    end_line: int = 0   # line of the closing brace
    name: str | None = None
    type: str | None = None
    phases: list[str] = field(default_factory=list)  # include { phase: ... } values


@dataclass
class ScanResult:
    """What the pre-scan found: the layer blocks and the line of the first legacy ``input:``."""

    blocks: list[LayerBlock]
    input_line: int | None


def _unquote(token: str) -> str:
    body = token[1:-1] if len(token) >= 2 and token[-1] == token[0] else token[1:]
    return body.replace('\\"', '"').replace("\\'", "'").replace("\\\\", "\\")


def scan_text(text: str) -> ScanResult:
    """Find the top-level layer blocks of a prototxt with a small token walk.

    It never fails: on text that protobuf will refuse it just finds what it can (the parse
    error is reported by the real parser).
    """
    blocks: list[LayerBlock] = []
    counts = {"layer": 0, "layers": 0}
    stack: list[str | None] = []
    key: str | None = None
    key_line = 1
    after_colon = False
    current: LayerBlock | None = None
    input_line: int | None = None
    line = 1
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        token = match.group()
        if kind == "ws":
            line += token.count("\n")
            continue
        if kind == "comment":
            continue
        if kind == "colon":
            after_colon = True
            continue
        if kind == "open":
            if not stack and key in _LAYER_FIELDS:
                current = LayerBlock(counts[key], key, key_line)
                counts[key] += 1
            stack.append(key)
            key, after_colon = None, False
            continue
        if kind == "close":
            if stack:
                stack.pop()
            if not stack and current is not None:
                current.end_line = line
                blocks.append(current)
                current = None
            key, after_colon = None, False
            continue
        if kind in ("word", "str") and key is not None and (after_colon or kind == "str"):
            value = _unquote(token) if kind == "str" else token
            if current is not None:
                _note_scalar(current, stack, key, value)
            elif not stack and key == "input" and input_line is None:
                input_line = key_line
            key, after_colon = None, False
            continue
        if kind == "word":
            key, key_line, after_colon = token, line, False
    if current is not None:  # unterminated block: keep what we saw
        current.end_line = line
        blocks.append(current)
    return ScanResult(blocks, input_line)


def _note_scalar(block: LayerBlock, stack: list[str | None], key: str, value: str) -> None:
    depth = len(stack)
    v0 = depth == 2 and stack[1] == "layer" and block.field == "layers"
    if depth == 1 or v0:
        if key == "name" and block.name is None:
            block.name = value
        elif key == "type" and block.type is None:
            block.type = value
    elif depth == 2 and stack[1] == "include" and key == "phase":
        block.phases.append(value)


def layer_lines(text: str) -> list[LayerBlock]:
    """The top-level ``layer {`` / ``layers {`` blocks of a net prototxt, in file order."""
    return scan_text(text).blocks


@dataclass
class SourceMap:
    """Where each layer of a parsed net came from: ``where(layer_param) -> Where``."""

    file: str
    lines_by_name: dict[str, list[int]] = field(default_factory=dict)
    blocks: list[LayerBlock] = field(default_factory=list)
    input_line: int | None = None

    @classmethod
    def from_text(cls, text: str, file: str) -> "SourceMap":
        """Pre-scan ``text`` (the contents of ``file``) for its top-level layer blocks."""
        scan = scan_text(text)
        lines: dict[str, list[int]] = {}
        for block in scan.blocks:
            if block.name is not None:
                lines.setdefault(block.name, []).append(block.line)
        return cls(file, lines, scan.blocks, scan.input_line)

    def where(self, layer_param: Message) -> Where:
        """File, line of the layer's block, name and type of ``layer_param``."""
        name = getattr(layer_param, "name", None) or None
        type_ = getattr(layer_param, "type", None)
        type_ = type_ if isinstance(type_, str) and type_ else None  # V1 enum types: unknown here
        return Where(file=self.file, line=self._line_of(layer_param, name), layer=name, type=type_)

    def _line_of(self, layer_param: Message, name: str | None) -> int | None:
        if name is None:
            return None
        lines = self.lines_by_name.get(name)
        if not lines:
            # the Input layer made from legacy input fields lives where `input:` was written
            return self.input_line if name == "input" else None
        if len(lines) == 1:
            return lines[0]
        phases = {caffe_pb2.Phase.Name(rule.phase) for rule in getattr(layer_param, "include", ())
                  if rule.HasField("phase")}
        for block in self.blocks:
            if block.name == name and phases and phases & set(block.phases):
                return block.line
        return lines[0]

    def block_at(self, line: int) -> LayerBlock | None:
        """The layer block containing ``line`` (for errors found while parsing)."""
        starts = [b.line for b in self.blocks]
        i = bisect.bisect_right(starts, line) - 1
        if i >= 0 and self.blocks[i].line <= line <= self.blocks[i].end_line:
            return self.blocks[i]
        return None

    def where_index(self, field_name: str, index: int) -> Where:
        """The location of the ``index``-th ``layer``/``layers`` block (for upgrade errors)."""
        for block in self.blocks:
            if block.field == field_name and block.index == index:
                return Where(file=self.file, line=block.line, layer=block.name, type=block.type)
        return Where(file=self.file)


# -- parsing -----------------------------------------------------------------------------
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "([^"]+)"')


@dataclass(frozen=True)
class SkippedField:
    """An unknown field skipped with ``allow_unknown_fields``."""

    message: str
    name: str
    line: int
    column: int


class _SkippingParser(text_format._Parser):  # type: ignore[name-defined,misc]
    """protobuf's parser, recording every unknown field it skips (top level of a skip only)."""

    def __init__(self) -> None:
        super().__init__(allow_unknown_field=True)
        self.skipped: list[SkippedField] = []
        self._depth = 0

    def _SkipFieldContents(self, tokenizer, field_name, immediate_message_type):  # noqa: N802
        if self._depth == 0:
            self.skipped.append(SkippedField(
                str(immediate_message_type), str(field_name),
                tokenizer._previous_line + 1, tokenizer._previous_column + 1))
        self._depth += 1
        try:
            return super()._SkipFieldContents(tokenizer, field_name, immediate_message_type)
        finally:
            self._depth -= 1


def _layer_context(text: str, line: int | None) -> str:
    if line is None:
        return ""
    block = SourceMap.from_text(text, "").block_at(line)
    if block is None or block.name is None:
        return ""
    return f" of layer '{block.name}'" + (f" ({block.type})" if block.type else "")


def _parse_error(exc: text_format.ParseError, text: str, filename: str, what: str) -> PrototxtError:
    line, column = exc.GetLine(), exc.GetColumn()
    message = str(exc)
    prefix = re.match(r"^\d+(?::\d+)? : ", message)
    if prefix:
        message = message[prefix.end():]
    if line is not None and 1 <= line:
        source_lines = text.splitlines()
        if line <= len(source_lines):
            quoted = f"'{source_lines[line - 1]}': "
            if message.startswith(quoted):
                message = message[len(quoted):]
    where = Where(file=filename, line=line, column=column)
    unknown = _UNKNOWN_FIELD.search(message)
    if unknown:
        msg_type, name = unknown.groups()
        return PrototxtError(
            f"unknown field '{name}' in {msg_type}{_layer_context(text, line)}; it is not in "
            f"BVLC Caffe's caffe.proto ({SKIP_HINT})", where)
    context = _field_context(text, line, column)
    return PrototxtError(f"cannot parse {what}: {message}{context}", where)


def _field_context(text: str, line: int | None, column: int | None) -> str:
    """`` (field 'x' of layer 'y' (Type))`` for a syntax error inside ``x: <bad value>``."""
    if line is None or column is None:
        return ""
    source_lines = text.splitlines()
    if not 1 <= line <= len(source_lines):
        return ""
    names = re.findall(r"([A-Za-z_]\w*)\s*:\s*", source_lines[line - 1][:max(column - 1, 0)])
    if not names:
        return ""
    return f" (field '{names[-1]}'{_layer_context(text, line)})"


def _instance(message: Message | type[M]) -> Message:
    return message() if isinstance(message, type) else message


def parse_text_proto(text: str, message: M | type[M], filename: str = "<string>",
                     allow_unknown_fields: bool | None = None) -> M:
    """Parse prototxt ``text`` into ``message`` (an instance, or a class to instantiate).

    Syntax errors and unknown fields raise :class:`PrototxtError` with ``file:line:col``.
    With ``allow_unknown_fields`` unknown fields are skipped, with one warning per distinct
    field (naming where it first occurs and how often); ``None`` takes the setting of the
    enclosing :func:`unknown_fields_allowed` block (off outside one).
    """
    target = _instance(message)
    what = target.DESCRIPTOR.name
    if allow_unknown_fields is None:
        allow_unknown_fields = _ALLOW_UNKNOWN.get()
    try:
        if allow_unknown_fields:
            _parse_skipping(text, target, filename)
        else:
            text_format.Parse(text, target)
    except text_format.ParseError as exc:
        raise _parse_error(exc, text, filename, what) from None
    return target  # type: ignore[return-value]


def _parse_skipping(text: str, target: Message, filename: str) -> None:
    try:
        parser = _SkippingParser()
    except TypeError:  # a protobuf runtime whose private parser differs: skip without details
        text_format.Parse(text, target, allow_unknown_field=True)
        log.warning("%s: unknown fields (if any) were skipped", filename)
        return
    parser.ParseLines(text.split("\n"), target)
    _warn_skipped(parser.skipped, filename)


def _warn_skipped(skipped: list[SkippedField], filename: str) -> None:
    seen: dict[tuple[str, str], list[SkippedField]] = {}
    for item in skipped:
        seen.setdefault((item.message, item.name), []).append(item)
    for (msg_type, name), items in seen.items():
        first = items[0]
        times = f" ({len(items)} times)" if len(items) > 1 else ""
        log.warning("%s:%d:%d: skipped unknown field '%s' in %s%s", filename, first.line,
                    first.column, name, msg_type, times)


def read_text_file(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of ``path``; a one-line :class:`PrototxtError` if missing or binary."""
    path = os.fspath(path)
    raw = read_file_bytes(path, f"{what} file", PrototxtError)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PrototxtError(f"not a text {what} file (it is binary or not UTF-8); a binary "
                            ".caffemodel/.solverstate goes where weights are expected",
                            Where(file=path)) from None


def read_text_proto(path: str | os.PathLike, message_cls: type[M],
                    allow_unknown_fields: bool | None = None) -> M:
    """Read a prototxt file into a new ``message_cls`` (see :func:`parse_text_proto`)."""
    text = read_text_file(path, message_cls.DESCRIPTOR.name)
    return parse_text_proto(text, message_cls, os.fspath(path), allow_unknown_fields)


def _c_float(value: float, digits: int, round_trip: Callable[[float], float]) -> str:
    """Format like protobuf C++'s SimpleFtoa/SimpleDtoa: %.{digits}g, more digits if lossy."""
    if math.isnan(value):
        return "nan"
    text = "%.*g" % (digits, value)
    if not math.isinf(value) and round_trip(float(text)) != round_trip(value):
        text = "%.*g" % (digits + 3 if digits == 6 else digits + 2, value)
    return text


def _as_float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


class _CaffePrinter(text_format._Printer):  # type: ignore[name-defined,misc]
    """protobuf's text printer with C++ TextFormat's float and double spelling (1, not 1.0)."""

    def PrintFieldValue(self, field, value):  # noqa: N802
        if field.cpp_type == FieldDescriptor.CPPTYPE_FLOAT:
            self.out.write(_c_float(value, 6, _as_float32))
        elif field.cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
            self.out.write(_c_float(value, 15, float))
        else:
            super().PrintFieldValue(field, value)


def to_text(message: Message) -> str:
    """``message`` in text format, spelled as Caffe's C++ WriteProtoToTextFile writes it."""
    out = io.StringIO()
    try:
        printer = _CaffePrinter(out)
    except Exception:  # a protobuf runtime whose private printer differs
        return text_format.MessageToString(message)
    printer.PrintMessage(message)
    return out.getvalue()


def write_text_proto(message: Message, path: str | os.PathLike) -> None:
    """Write ``message`` in text format (as Caffe's WriteProtoToTextFile), atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(to_text(message))


# -- nets and solvers --------------------------------------------------------------------
def parse_net(text: str, filename: str = "<string>", allow_unknown_fields: bool | None = None
              ) -> tuple[caffe_pb2.NetParameter, SourceMap]:
    """Parse a net prototxt and upgrade it as Caffe's UpgradeNetAsNeeded does."""
    from .upgrade import upgrade_net

    try:
        net = parse_text_proto(text, caffe_pb2.NetParameter, filename, allow_unknown_fields)
    except PrototxtError as exc:
        _refuse_other_kind(text, filename, caffe_pb2.NetParameter, caffe_pb2.SolverParameter)
        if " in caffe.NetParameter;" in exc.message and not scan_text(text).blocks:
            first = exc.message.split(";")[0]
            raise PrototxtError(f"not a NetParameter (no layer {{ }} blocks): {first}",
                                exc.where) from None
        raise
    if not (len(net.layer) or len(net.layers) or len(net.input)) and text.strip():
        _refuse_other_kind(text, filename, caffe_pb2.NetParameter, caffe_pb2.SolverParameter)
    source_map = SourceMap.from_text(text, filename)
    upgrade_net(net, filename, source_map)
    return net, source_map


def _refuse_other_kind(text: str, filename: str, expected: type[Message],
                       other: type[Message]) -> None:
    """Raise a clear error if ``text`` is a valid ``other`` message (a solver given as net...)."""
    probe = other()
    try:
        text_format.Parse(text, probe)
    except text_format.ParseError:
        return
    if probe.ListFields():
        raise PrototxtError(f"not a {expected.DESCRIPTOR.name}: the file is a "
                            f"{other.DESCRIPTOR.name}", Where(file=filename))


def read_net(path: str | os.PathLike, allow_unknown_fields: bool | None = None
             ) -> tuple[caffe_pb2.NetParameter, SourceMap]:
    """Read and upgrade a net prototxt; returns the NetParameter and its source map."""
    text = read_text_file(path, "NetParameter")
    return parse_net(text, os.fspath(path), allow_unknown_fields)


def parse_solver(text: str, filename: str = "<string>", allow_unknown_fields: bool | None = None
                 ) -> caffe_pb2.SolverParameter:
    """Parse a solver prototxt and upgrade the legacy ``solver_type`` enum to ``type``."""
    from .upgrade import upgrade_solver

    try:
        solver = parse_text_proto(text, caffe_pb2.SolverParameter, filename, allow_unknown_fields)
    except PrototxtError:
        _refuse_other_kind(text, filename, caffe_pb2.SolverParameter, caffe_pb2.NetParameter)
        raise
    upgrade_solver(solver, filename)
    return solver


def read_solver(path: str | os.PathLike, allow_unknown_fields: bool | None = None,
                snapshot_prefix: bool = True) -> caffe_pb2.SolverParameter:
    """Read a solver prototxt as Caffe's ReadSolverParamsFromTextFileOrDie does.

    Besides the ``solver_type`` upgrade, ``snapshot_prefix`` (unless turned off) is set to
    the solver path without extension when missing, and a prefix naming an existing
    directory gets the solver file's stem appended (Caffe's UpgradeSnapshotPrefixProperty).
    """
    path = os.fspath(path)
    text = read_text_file(path, "SolverParameter")
    solver = parse_solver(text, path, allow_unknown_fields)
    if snapshot_prefix:
        fix_snapshot_prefix(solver, path)
    return solver


def fix_snapshot_prefix(solver: caffe_pb2.SolverParameter, solver_path: str) -> None:
    """Caffe's UpgradeSnapshotPrefixProperty (src/caffe/util/upgrade_proto.cpp)."""
    if not solver.HasField("snapshot_prefix"):
        solver.snapshot_prefix = os.path.splitext(solver_path)[0]
        log.info("snapshot_prefix was not specified and is set to %s", solver.snapshot_prefix)
    elif os.path.isdir(solver.snapshot_prefix):
        stem = os.path.splitext(os.path.basename(solver_path))[0]
        solver.snapshot_prefix = os.path.join(solver.snapshot_prefix, stem)
        log.info("snapshot_prefix was a directory and is replaced to %s", solver.snapshot_prefix)
