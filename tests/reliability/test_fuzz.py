"""Issue 9, row 4: property-based fuzzing of every parser that reads a user's file.

Valid inputs (corpus prototxts, golden caffemodels/solverstates/lists/logs) are mutated by
hypothesis; the only allowed outcomes are a successful parse or a documented
:class:`caffelike.errors.CaffelikeError`. Anything else (a protobuf DecodeError, IndexError,
UnicodeDecodeError, a hang) is a bug in the parser.

Examples per target: ``CAFFELIKE_FUZZ_EXAMPLES`` (default 25, which keeps this file to a few
seconds); see README.md for a long local run.
"""
from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from caffelike.errors import CaffelikeError

from .helpers import GOLDEN, TESTS

EXAMPLES = int(os.environ.get("CAFFELIKE_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="CAFFELIKE_FUZZ_SEED" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
CORPUS = TESTS / "data" / "corpus"
NETS = [CORPUS / "BVLC__caffe" / "examples" / "mnist" / "lenet_train_test.prototxt",
        CORPUS / "BVLC__caffe" / "examples" / "mnist" / "lenet.prototxt",
        CORPUS / "BVLC__caffe@v0" / "examples" / "lenet" / "lenet_train.prototxt",
        GOLDEN / "solvers" / "sgd_step" / "train_val.prototxt"]
SOLVER_FILES = [CORPUS / "BVLC__caffe" / "examples" / "mnist" / "lenet_solver.prototxt",
                CORPUS / "BVLC__caffe@v0" / "examples" / "lenet" / "lenet_solver.prototxt"]
TOKENS = ["{", "}", ":", '"', "'", "layer", "layers", "name", "type", "bottom", "top", "param",
          "convolution_param", "num_output", "kernel_size", "include", "phase", "TRAIN", "#",
          "0", "-1", "4294967296", "1e40", "nan", "inf", "-inf", "\n", " ", "\\", "\x00", "é", "\ufeff",
          '"Python"', '"Convolution"', "input_dim", "input_shape { dim: 1 }", "shape { dim: -5 }",
          "weight_filler { type: \"nope\" }", "[caffe.foo]", "<", ">", "0x10", "true"]


def _text_mutation(text: str):
    """A strategy of mutated versions of ``text``: deletes, duplicates, token insertions, truncation."""
    n = len(text)
    op = st.one_of(
        st.tuples(st.just("delete"), st.integers(0, n), st.integers(1, 40)),
        st.tuples(st.just("dup"), st.integers(0, n), st.integers(1, 80)),
        st.tuples(st.just("insert"), st.integers(0, n), st.sampled_from(TOKENS)),
        st.tuples(st.just("insert"), st.integers(0, n), st.text(max_size=8)),
        st.tuples(st.just("truncate"), st.integers(0, n), st.just(0)),
    )

    def apply(ops):
        out = text
        for kind, pos, arg in ops:
            pos = min(pos, len(out))
            if kind == "delete":
                out = out[:pos] + out[pos + arg:]
            elif kind == "dup":
                out = out[:pos] + out[pos:pos + arg] + out[pos:]
            elif kind == "insert":
                out = out[:pos] + arg + out[pos:]
            else:
                out = out[:pos]
        return out

    return st.lists(op, min_size=1, max_size=4).map(apply)


def _byte_mutation(data: bytes):
    """A strategy of mutated versions of ``data``: bit flips, byte sets, cuts, splices, inserts."""
    n = len(data)
    op = st.one_of(
        st.tuples(st.just("flip"), st.integers(0, max(0, n - 1)), st.integers(0, 7)),
        st.tuples(st.just("set"), st.integers(0, max(0, n - 1)), st.sampled_from([0, 0x7f, 0x80, 0xff, 0x0a, 0x12])),
        st.tuples(st.just("truncate"), st.integers(0, n), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, n), st.binary(min_size=1, max_size=12)),
        st.tuples(st.just("delete"), st.integers(0, n), st.integers(1, 64)),
    )

    def apply(ops):
        out = bytearray(data)
        for kind, pos, arg in ops:
            pos = min(pos, len(out))
            if kind == "flip" and pos < len(out):
                out[pos] ^= 1 << arg
            elif kind == "set" and pos < len(out):
                out[pos] = arg
            elif kind == "truncate":
                del out[pos:]
            elif kind == "insert":
                out[pos:pos] = arg
            elif kind == "delete":
                del out[pos:pos + arg]
        return bytes(out)

    return st.lists(op, min_size=1, max_size=4).map(apply)


def _allowed(call) -> None:
    """Run ``call``: success or a CaffelikeError are fine; any other exception fails the test."""
    try:
        call()
    except CaffelikeError as exc:
        assert "\n" not in str(exc), f"multi-line error: {exc}"


@pytest.mark.parametrize("path", NETS, ids=lambda p: p.parent.parent.parent.name + "/" + p.name)
def test_fuzz_net_prototxt(path):
    from caffelike.io import parse_net

    @FUZZ
    @given(_text_mutation(path.read_text()))
    def check(text):
        _allowed(lambda: parse_net(text, str(path)))

    check()


@pytest.mark.parametrize("path", SOLVER_FILES, ids=lambda p: p.parent.parent.parent.name + "/" + p.name)
def test_fuzz_solver_prototxt(path):
    from caffelike.io import parse_solver

    @FUZZ
    @given(_text_mutation(path.read_text()))
    def check(text):
        _allowed(lambda: parse_solver(text, str(path)))

    check()


def test_fuzz_deploy_net_build():
    """Past the parser: a mutated deploy net either builds (shapes only) or is a CaffelikeError."""
    from caffelike.io import parse_net
    from caffelike.net import Net

    path = NETS[1]

    @FUZZ
    @given(_text_mutation(path.read_text()))
    def check(text):
        def build():
            net_param, source_map = parse_net(text, str(path))
            Net(net_param, 1, fill=False, source_map=source_map)

        _allowed(build)

    check()


def _binary_target(data: bytes, suffix: str, reader):
    @FUZZ
    @given(_byte_mutation(data))
    def check(blob):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "fuzzed" + suffix)
            with open(path, "wb") as handle:
                handle.write(blob)
            _allowed(lambda: reader(path))

    check()


def test_fuzz_caffemodel():
    from caffelike.io import load_weights, read_caffemodel

    data = (GOLDEN / "solvers" / "sgd_step" / "init.caffemodel").read_bytes()
    _binary_target(data, ".caffemodel", lambda p: (read_caffemodel(p), load_weights(p)))


def test_fuzz_caffemodel_into_a_net():
    """Mutated weights copied into the net they belong to: loaded, or a CaffelikeError."""
    from caffelike.net import Net

    case = GOLDEN / "solvers" / "sgd_step"
    net_file = tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False)
    text = (case / "train_val.prototxt").read_text()
    # a deploy form of the case's net: Input instead of the HDF5 sources
    text = text.replace('type: "HDF5Data"\n  top: "data"\n  top: "label"\n  include { phase: TRAIN }\n'
                        '  hdf5_data_param { source: "train_list.txt" batch_size: 32 shuffle: false }',
                        'type: "Input"\n  top: "data"\n  top: "label"\n  include { phase: TRAIN }\n'
                        '  input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } shape { dim: 2 } }')
    net_file.write(text)
    net_file.close()
    try:
        net = Net(net_file.name, 0)
        _binary_target((case / "init.caffemodel").read_bytes(), ".caffemodel", net.copy_trained_layers_from)
    finally:
        os.unlink(net_file.name)


def test_fuzz_solverstate():
    from caffelike.io import read_solverstate
    from caffelike.solver.snapshot import read_state

    data = (GOLDEN / "solvers" / "sgd_step" / "snapshots" / "tinybn_iter_20.solverstate").read_bytes()
    _binary_target(data, ".solverstate", lambda p: (read_solverstate(p), read_state(p)))


def test_fuzz_image_list():
    from caffelike.data.sources import read_file_list
    from caffelike.io.image_list import read_image_list

    text = (GOLDEN / "solvers" / "imagedata_png" / "images.txt").read_text()

    @FUZZ
    @given(_text_mutation(text) | _byte_mutation(text.encode()).map(lambda b: b.decode("latin-1")))
    def check(body):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "list.txt")
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
                handle.write(body)
            _allowed(lambda: read_image_list(path))
            _allowed(lambda: read_file_list(path, "HDF5 file"))

    check()


def test_fuzz_training_log():
    from caffelike.logs.parse import parse_lines

    lines = (GOLDEN / "logs" / "sgd_step" / "sgd_step.log").read_text().splitlines(keepends=True)[:120]
    text = "".join(lines)

    @FUZZ
    @given(_text_mutation(text))
    def check(body):
        _allowed(lambda: parse_lines(body.splitlines(keepends=True), 2026))

    check()


# ------------------------------------------------------------------- regressions found by fuzzing
def test_solverstate_history_blob_with_wrong_count_is_a_weights_error(tmp_path):
    """Found by test_fuzz_solverstate (CAFFELIKE_FUZZ_SEED=7): numpy's reshape error leaked out."""
    from caffelike.errors import WeightsError
    from caffelike.proto import caffe_pb2
    from caffelike.solver.snapshot import read_state

    state = caffe_pb2.SolverState(iter=3, current_step=0)
    blob = state.history.add()
    blob.shape.dim.append(1)
    blob.data.extend([0.0] * 8)
    path = tmp_path / "bad.solverstate"
    path.write_bytes(state.SerializeToString())
    with pytest.raises(WeightsError) as info:
        read_state(str(path))
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_log_line_with_an_absurd_timestamp_is_not_a_crash():
    """Found by test_fuzz_training_log (CAFFELIKE_FUZZ_SEED=11): datetime() overflowed."""
    from caffelike.logs.parse import parse_lines

    lines = (GOLDEN / "logs" / "sgd_step" / "sgd_step.log").read_text().splitlines(keepends=True)[:60]
    lines[0] = lines[0][:6] + "4294967296" + lines[0][6:]  # the hour becomes 429496729617
    parse_lines(lines, 2026)


def test_fuzz_lmdb_datum_record():
    """A mutated Datum value of real Caffe's LMDB (golden/data) loads, or is a DataError."""
    from caffelike.data.items import DatumItems
    from caffelike.data.transformer import DataTransformer
    from caffelike.errors import Where
    from caffelike.proto import caffe_pb2

    from caffelike.data.sources import KeyValueDB

    # Through caffelike's own LMDB cache: py-lmdb refuses a second open of one env per process.
    key, value = KeyValueDB(str(GOLDEN / "data" / "caffe_train200_lmdb")).get(0)

    class _DB:
        path = "train_lmdb"

    where = Where(file="train_val.prototxt", line=1, layer="data", type="Data")
    param = caffe_pb2.TransformationParameter(crop_size=8, mirror=True)
    items = DatumItems(_DB(), DataTransformer(param, 0, where), True, where)
    rng = __import__("numpy").random.default_rng(0)

    @FUZZ
    @given(_byte_mutation(value))
    def check(blob):
        _allowed(lambda: items.load((key, blob), rng))

    check()


def test_fuzz_mean_binaryproto(tmp_path):
    """A mutated mean file (.binaryproto) reads, or is a CaffelikeError."""
    import numpy as np

    from caffelike.io import read_mean_file, write_mean_file

    path = tmp_path / "mean.binaryproto"
    write_mean_file(np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5), path)
    _binary_target(path.read_bytes(), ".binaryproto", read_mean_file)


def test_corrupt_hdf5_weights_copied_into_a_net_is_a_weights_error(sgd_case, capsys):
    """Found by test_fuzz_caffemodel_into_a_net (CAFFELIKE_FUZZ_SEED=23): h5py's OSError leaked out."""
    from .helpers import run_cli

    data = (sgd_case / "init.caffemodel").read_bytes()
    (sgd_case / "init.caffemodel").write_bytes(b"\x89HDF\r\n\x1a\n" + data)
    result = run_cli(capsys, "train", "-solver", "solver.prototxt", "-weights", "init.caffemodel")
    assert result.error.startswith("init.caffemodel: ")
