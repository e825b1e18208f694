"""Text-format parsing: one-line errors, unknown fields, the layer pre-scan, writing."""
from __future__ import annotations

import logging
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caffelike.errors import PrototxtError
from caffelike.io import (SourceMap, layer_lines, parse_net, parse_solver, parse_text_proto,
                          read_net, read_solver, read_text_proto, write_text_proto)
from caffelike.io.prototxt import to_text
from caffelike.proto import caffe_pb2

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "data" / "corpus"
HINT = "(use --allow-unknown-fields / allow_unknown_fields=True to skip fields from Caffe forks)"

NET = """name: "tiny"
layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } }
}
# a comment with a brace {
layer {
  type: "Pooling"
  name: "pool1"   # name after type
  bottom: "data"
  top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 fork_rounding: false }  # fork_rounding: no schema has it
}
"""


def test_unknown_field_message() -> None:
    with pytest.raises(PrototxtError) as info:
        parse_net(NET, "tiny.prototxt")
    assert str(info.value) == (
        "tiny.prototxt:14:44: unknown field 'fork_rounding' in caffe.PoolingParameter of layer "
        f"'pool1' (Pooling); it is not in BVLC Caffe's caffe.proto {HINT}")
    assert "\n" not in str(info.value)


def test_unknown_field_skipped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    text = NET.replace("fork_rounding: false }", "fork_rounding: false }\n  fork_param { a: 1 b { c: 2 } }")
    text += text[text.index("layer {\n  type"):].replace("pool1", "pool2")
    with caplog.at_level(logging.WARNING, logger="caffelike"):
        net, _ = parse_net(text, "tiny.prototxt", allow_unknown_fields=True)
    assert [layer.name for layer in net.layer] == ["data", "pool1", "pool2"]
    assert net.layer[1].pooling_param.kernel_size == 2
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "unknown field" in r.getMessage()]
    assert warnings == [
        "tiny.prototxt:14:44: skipped unknown field 'fork_rounding' in caffe.PoolingParameter (2 times)",
        "tiny.prototxt:15:3: skipped unknown field 'fork_param' in caffe.LayerParameter (2 times)",
    ]


def test_syntax_error_message() -> None:
    with pytest.raises(PrototxtError) as info:
        parse_net('layer {\n  name: "a"\n  type: Input\n', "bad.prototxt")
    assert str(info.value) == ("bad.prototxt:3:9: cannot parse NetParameter: Expected string "
                               "but found: 'Input' (field 'type' of layer 'a' (Input))")


def test_unclosed_block() -> None:
    with pytest.raises(PrototxtError) as info:
        parse_net('layer {\n', "bad.prototxt")
    assert str(info.value) == 'bad.prototxt:1:7: cannot parse NetParameter: Expected "}".'


def test_solver_given_as_net(tmp_path: pathlib.Path) -> None:
    solver = CORPUS / "BVLC__caffe/examples/mnist/lenet_solver.prototxt"
    with pytest.raises(PrototxtError) as info:
        read_net(solver)
    assert str(info.value) == f"{solver}: not a NetParameter: the file is a SolverParameter"


def test_net_given_as_solver() -> None:
    net = CORPUS / "BVLC__caffe/examples/mnist/lenet.prototxt"
    with pytest.raises(PrototxtError) as info:
        read_solver(net)
    assert str(info.value) == f"{net}: not a SolverParameter: the file is a NetParameter"


def test_binary_given_as_prototxt() -> None:
    model = CORPUS / "yuvval__nn_ex1/examples/mnist/lenet_iter_10000.caffemodel"
    with pytest.raises(PrototxtError, match=r"lenet_iter_10000.caffemodel: not a text NetParameter file"):
        read_net(model)


def test_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(PrototxtError, match=r"nope.prototxt: cannot read NetParameter file"):
        read_net(tmp_path / "nope.prototxt")


def test_layer_lines_and_source_map() -> None:
    blocks = layer_lines(NET)
    assert [(b.line, b.name, b.type, b.end_line) for b in blocks] == [
        (2, "data", "Input", 7), (9, "pool1", "Pooling", 15)]
    net, source_map = parse_net(NET.replace(" fork_rounding: false", ""), "tiny.prototxt")
    where = source_map.where(net.layer[1])
    assert (where.file, where.line, where.layer, where.type) == ("tiny.prototxt", 9, "pool1", "Pooling")
    assert str(where) == "tiny.prototxt:9: layer 'pool1' (Pooling)"


def test_source_map_same_name_by_phase() -> None:
    path = CORPUS / "BVLC__caffe/examples/mnist/lenet_train_test.prototxt"
    net, source_map = read_net(path)
    text_lines = path.read_text().splitlines()
    lines = [source_map.where(layer).line for layer in net.layer[:2]]
    # the two "mnist" data layers (TRAIN, TEST) each map to their own block
    assert lines[0] != lines[1]
    for layer, line in zip(net.layer[:2], lines):
        block = "\n".join(text_lines[line - 1:line + 8])
        assert caffe_pb2.Phase.Name(layer.include[0].phase) in block


def test_source_map_v1_and_legacy_input() -> None:
    net, source_map = read_net(CORPUS / "BVLC__caffe@v1/examples/mnist/lenet.prototxt")
    assert net.layer[0].name == "input" and net.layer[0].type == "Input"
    assert source_map.where(net.layer[0]).line == 2  # the legacy `input:` line
    assert source_map.where(net.layer[1]).line == 7  # first `layers {`
    assert isinstance(source_map, SourceMap)


def test_v0_source_map() -> None:
    net, source_map = read_net(CORPUS / "BVLC__caffe@v0/examples/lenet/lenet.prototxt")
    first = source_map.blocks[0]
    assert first.field == "layers" and first.name == net.layer[1].name


def test_parse_text_proto_accepts_instance_or_class() -> None:
    state = parse_text_proto("phase: TEST level: 2", caffe_pb2.NetState)
    assert state.phase == caffe_pb2.TEST and state.level == 2
    target = caffe_pb2.NetState()
    assert parse_text_proto("stage: 'a'", target) is target and list(target.stage) == ["a"]


def test_write_text_proto_caffe_spelling(tmp_path: pathlib.Path) -> None:
    param = caffe_pb2.ParamSpec(lr_mult=1.0, decay_mult=0.1)
    out = tmp_path / "p.prototxt"
    write_text_proto(param, out)
    # C++ TextFormat spelling (SimpleFtoa): 1 not 1.0, 0.1 not 0.10000000149
    assert out.read_text() == "lr_mult: 1\ndecay_mult: 0.1\n"
    assert read_text_proto(out, caffe_pb2.ParamSpec) == param


def test_solver_type_upgrade() -> None:
    solver = parse_solver("base_lr: 0.1\nsolver_type: ADAM\n", "s.prototxt")
    assert solver.type == "Adam" and not solver.HasField("solver_type")


def test_solver_type_and_type_conflict() -> None:
    with pytest.raises(Exception, match=r"s.prototxt: the legacy solver_type field"):
        parse_solver('solver_type: SGD\ntype: "Adam"\n', "s.prototxt")


def test_read_solver_snapshot_prefix(tmp_path: pathlib.Path) -> None:
    # upgrade_proto.cpp UpgradeSnapshotPrefixProperty
    path = tmp_path / "solver.prototxt"
    path.write_text("base_lr: 0.1\n")
    assert read_solver(path).snapshot_prefix == str(tmp_path / "solver")
    (tmp_path / "snaps").mkdir()
    path.write_text(f'base_lr: 0.1\nsnapshot_prefix: "{tmp_path / "snaps"}"\n')
    assert read_solver(path).snapshot_prefix == str(tmp_path / "snaps" / "solver")
    assert not read_solver(path, snapshot_prefix=False).snapshot_prefix.endswith("/solver")


def test_other_text_file_given_as_net() -> None:
    labelmap = CORPUS / "chuanqi305__MobileNet-SSD/create_lmdb/code/labelmap.prototxt"
    with pytest.raises(PrototxtError) as info:
        read_net(labelmap)
    assert str(info.value) == (f"{labelmap}:1:1: not a NetParameter (no layer {{ }} blocks): "
                               "unknown field 'item' in caffe.NetParameter")


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False), st.floats(allow_nan=False))
def test_float_spelling_round_trips(value: float, double: float) -> None:
    # float fields print with %.6g (%.9g if lossy), doubles %.15g (%.17g): always exact
    message = caffe_pb2.FillerParameter(std=value)
    assert parse_text_proto(to_text(message), caffe_pb2.FillerParameter).std == message.std
    blob = caffe_pb2.BlobProto()
    blob.double_data.append(double)
    assert parse_text_proto(to_text(blob), caffe_pb2.BlobProto).double_data[0] == double
