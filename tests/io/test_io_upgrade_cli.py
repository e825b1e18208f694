"""`caffelike upgrade_net_proto_text | upgrade_net_proto_binary | upgrade_solver_proto_text`."""
from __future__ import annotations

import logging
import pathlib
import subprocess
import sys

import pytest

from caffelike.cli import main
from caffelike.io import read_binary_net, read_caffemodel, read_text_proto
from caffelike.proto import caffe_pb2

TESTS = pathlib.Path(__file__).resolve().parents[1]
CORPUS = TESTS / "data" / "corpus"
GOLDEN = TESTS / "golden"


@pytest.fixture(autouse=True)
def _keep_logging_setup():
    """The commands call setup_logging(); give later tests the logger as it was."""
    logger = logging.getLogger("caffelike")
    saved = (logger.propagate, logger.level, list(logger.handlers))
    yield
    logger.propagate, level, handlers = saved
    logger.setLevel(level)
    logger.handlers[:] = handlers


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "caffelike", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("source, golden", [
    ("BVLC__caffe@v0/examples/imagenet/imagenet_train.prototxt",
     "BVLC__caffe@v0__examples__imagenet__imagenet_train.prototxt"),
    ("BVLC__caffe@v1/models/bvlc_googlenet/train_val.prototxt",
     "BVLC__caffe@v1__models__bvlc_googlenet__train_val.prototxt"),
])
def test_upgrade_net_proto_text_matches_caffe(source: str, golden: str, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out.prototxt"
    assert main(["upgrade_net_proto_text", str(CORPUS / source), str(out)]) == 0
    assert out.read_text() == (GOLDEN / "upgrade" / golden).read_text()


def test_already_current_is_copied(tmp_path: pathlib.Path) -> None:
    source = CORPUS / "BVLC__caffe/examples/mnist/lenet.prototxt"
    out = tmp_path / "out.prototxt"
    assert main(["upgrade_net_proto_text", str(source), str(out)]) == 0
    assert read_text_proto(out, caffe_pb2.NetParameter) == read_text_proto(source, caffe_pb2.NetParameter)


def test_syntax_error_is_one_line_without_traceback(tmp_path: pathlib.Path) -> None:
    source = CORPUS / "lim0606__caffe-googlenet-bn/deploy.prototxt"
    result = _run("upgrade_net_proto_text", str(source), str(tmp_path / "out.prototxt"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [f"caffelike upgrade_net_proto_text: error: {source}:3106:9: cannot parse "
                      "NetParameter: Enum type \"caffe.V1LayerParameter.LayerType\" has no value "
                      "named \"Softmax\". (field 'type' of layer 'prob' (Softmax))"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.prototxt").exists()


def test_fork_fields_and_the_skip_flag(tmp_path: pathlib.Path) -> None:
    # a field no schema of ours holds (the corpus nets' fork fields get added to the schema)
    source = tmp_path / "fork.prototxt"
    source.write_text('name: "fork"\nlayer { name: "data" type: "Input" top: "data"\n'
                      '  input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\n'
                      'layer { name: "pool1" type: "Pooling" bottom: "data" top: "pool1"\n'
                      '  pooling_param { kernel_size: 2\n    some_fork_flag: false } }\n')
    out = tmp_path / "out.prototxt"
    result = _run("upgrade_net_proto_text", str(source), str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"error: {source}:6:5: unknown field 'some_fork_flag' in caffe.PoolingParameter of layer "
            "'pool1' (Pooling)") in result.stderr
    assert "--allow-unknown-fields" in result.stderr
    result = _run("upgrade_net_proto_text", str(source), str(out), "--allow-unknown-fields")
    assert result.returncode == 0, result.stderr
    warnings = [l for l in result.stderr.splitlines() if l.startswith("W") and "unknown field" in l]
    assert len(warnings) == 1 and "skipped unknown field 'some_fork_flag' in caffe.PoolingParameter" in warnings[0]
    assert "some_fork_flag" not in out.read_text()


def test_fork_field_in_our_schema_upgrades_and_is_kept(tmp_path: pathlib.Path) -> None:
    """DenseNet's pooling_param { ceil_mode: false } (issue 16) is in our schema: no flag needed."""
    source = CORPUS / "shicai__DenseNet-Caffe/DenseNet_121.prototxt"
    out = tmp_path / "out.prototxt"
    result = _run("upgrade_net_proto_text", str(source), str(out))
    assert result.returncode == 0, result.stderr
    assert "unknown field" not in result.stderr
    assert "ceil_mode: false" in out.read_text()


def test_upgrade_net_proto_binary(tmp_path: pathlib.Path) -> None:
    source = GOLDEN / "nets" / "cifar10_quick" / "weights.caffemodel"
    out = tmp_path / "up.caffemodel"
    assert main(["upgrade_net_proto_binary", str(source), str(out)]) == 0
    upgraded = read_binary_net(out)
    assert not len(upgraded.layers) and len(upgraded.layer)
    assert upgraded == read_caffemodel(source)


def test_upgrade_net_proto_binary_refuses_non_net(tmp_path: pathlib.Path) -> None:
    result = _run("upgrade_net_proto_binary", str(CORPUS / "BVLC__caffe/examples/mnist/lenet.prototxt"),
                  str(tmp_path / "x"))
    assert result.returncode == 1 and "not a binary NetParameter" in result.stderr


def test_upgrade_solver_proto_text(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "old_solver.prototxt"
    source.write_text('net: "train_val.prototxt"\nbase_lr: 0.01\nsolver_type: NESTEROV\n')
    out = tmp_path / "solver.prototxt"
    assert main(["upgrade_solver_proto_text", str(source), str(out)]) == 0
    assert out.read_text() == 'base_lr: 0.01\nnet: "train_val.prototxt"\ntype: "Nesterov"\n'


def test_usage_error() -> None:
    result = _run("upgrade_net_proto_text", "only_one_arg")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the following arguments are required: OUT" in result.stderr
