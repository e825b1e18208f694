"""Issue 9, row 1: the bad-input matrix.

Each row breaks one thing in a copy of a golden case (golden/solvers/sgd_step or imagedata_png)
and runs ``caffelike train`` in-process. Every row must fail with a non-zero status, no Python
traceback, exactly one ``caffelike train: error: ...`` line that names the file, line and layer
(or the list line / blob), and must leave every file of the case untouched (nothing written over
earlier results: a previous snapshot is planted in ``snapshots/`` first).

The conditions mirror Caffe's own CHECK failures (cited per row); the texts are caffelike's.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Callable

import pytest

from .helpers import assert_located, edit, layer_line, line_of, run_cli, tree_digest

NET = "train_val.prototxt"
SOLVER = "solver.prototxt"


@dataclass
class Row:
    """One bad input: how to break the case, the flags, where the error must point, a phrase."""

    name: str
    case: str  # "sgd" or "image"
    breaks: Callable[[pathlib.Path], None]
    args: tuple[str, ...] = ()
    file: str | None = None
    line: Callable[[pathlib.Path], int] | int | None = None
    layer: tuple[str, str] | None = None
    phrase: tuple[str, ...] = ()
    xfail: str | None = None
    marks: list = field(default_factory=list)


def _net_edit(old: str, new: str) -> Callable[[pathlib.Path], None]:
    return lambda work: edit(work / NET, old, new)


def _at(needle: str, file: str = NET) -> Callable[[pathlib.Path], int]:
    return lambda work: line_of(work / file, needle)


def _layer_at(name: str) -> Callable[[pathlib.Path], int]:
    return lambda work: layer_line(work / NET, name)


def _truncate(work: pathlib.Path) -> None:
    data = (work / "init.caffemodel").read_bytes()
    (work / "init.caffemodel").write_bytes(data[: len(data) // 2])


def _jpeg(work: pathlib.Path) -> None:
    """A real JPEG (one of the case's images re-encoded) given as weights."""
    import cv2

    img = cv2.imread(str(work / "img" / "img00_c0.png") if (work / "img").exists() else
                     str(pathlib.Path(__file__).resolve().parents[1] / "golden" / "solvers" / "imagedata_png"
                         / "img" / "img00_c0.png"))
    ok, data = cv2.imencode(".jpg", img)
    assert ok
    (work / "photo.jpg").write_bytes(data.tobytes())


def _share_mismatch(work: pathlib.Path) -> None:
    edit(work / NET, "inner_product_param { num_output: 32", 'param { name: "w" } inner_product_param { num_output: 32')
    edit(work / NET, "inner_product_param { num_output: 4", 'param { name: "w" } inner_product_param { num_output: 4')


def _other_net_state(work: pathlib.Path) -> None:
    """A solverstate (and its learned_net) of the 32-unit net, resumed into a 16-unit net."""
    from caffelike.io import read_caffemodel
    from caffelike.proto import caffe_pb2

    model = read_caffemodel(str(work / "init.caffemodel"))
    model_path = work / "snapshots" / "other_iter_5.caffemodel"
    model_path.write_bytes(model.SerializeToString())
    state = caffe_pb2.SolverState(iter=5, learned_net=str(model_path), current_step=0)
    (work / "other.solverstate").write_bytes(state.SerializeToString())
    edit(work / NET, "num_output: 32", "num_output: 16")


def _state_history_mismatch(work: pathlib.Path) -> None:
    """A solverstate whose history holds one blob (the net has 10 learnable blobs)."""
    from caffelike.proto import caffe_pb2

    state = caffe_pb2.SolverState(iter=5, current_step=0)
    state.history.add().shape.dim.extend([1])
    state.history[0].data.append(0.0)
    (work / "other.solverstate").write_bytes(state.SerializeToString())


def _image_dir(work: pathlib.Path) -> None:
    """An entry that exists but cannot be read as a file (a folder; chmod does not stop root)."""
    (work / "img" / "img05_c1.png").unlink()
    (work / "img" / "img05_c1.png").mkdir()


ROWS = [
    # prototxt parsing (caffe.cpp -> ReadProtoFromTextFileOrDie: protobuf TextFormat errors)
    Row("syntax_error", "sgd", _net_edit('name: "conv1"', 'name: "conv1" {{'), file=NET,
        line=_at('name: "conv1"'), phrase=("conv1",)),
    Row("unknown_field", "sgd", _net_edit("num_output: 8", "num_outputs: 8"), file=NET,
        line=_at("num_outputs: 8"), layer=("conv1", "Convolution"), phrase=("num_outputs",)),
    Row("wrong_value_type", "sgd", _net_edit("num_output: 8", 'num_output: "eight"'), file=NET,
        line=_at('num_output: "eight"'), phrase=("num_output", "conv1")),
    Row("bad_enum_value", "sgd", _net_edit("pool: MAX", "pool: MAXX"), file=NET,
        line=_at("pool: MAXX"), phrase=("MAXX", "pool1")),
    # wiring (layer_factory.hpp: "Unknown layer type"; net.cpp AppendBottom/AppendTop; layer.hpp CheckBlobCounts)
    Row("unknown_layer_type", "sgd", _net_edit('type: "ReLU"', 'type: "ReLu"'), file=NET,
        line=_layer_at("relu1"), layer=("relu1", "ReLu"), phrase=("unknown layer type", "ReLU")),
    Row("unknown_bottom", "sgd", _net_edit('bottom: "pool1"', 'bottom: "pool9"'), file=NET,
        line=_layer_at("ip1"), layer=("ip1", "InnerProduct"), phrase=("pool9",)),
    Row("top_produced_twice", "sgd", _net_edit('top: "ip1"\n  inner', 'top: "conv1"\n  inner'), file=NET,
        line=_layer_at("ip1"), layer=("ip1", "InnerProduct"), phrase=("conv1", "multiple")),
    Row("wrong_bottom_count", "sgd",
        _net_edit('bottom: "ip2"\n  bottom: "label"\n  top: "loss"', 'bottom: "ip2"\n  top: "loss"'), file=NET,
        line=_layer_at("loss"), layer=("loss", "SoftmaxWithLoss"), phrase=("2", "1")),
    # net.cpp AppendParam: "Cannot share param ... shape mismatch"
    Row("param_sharing_shape_mismatch", "sgd", _share_mismatch, file=NET, line=_layer_at("ip2"),
        layer=("ip2", "InnerProduct"), phrase=("'w'", "(32, 288)", "(4, 32)")),
    # weights (net.cpp CopyTrainedLayersFrom / io.cpp ReadProtoFromBinaryFile)
    Row("caffemodel_truncated", "sgd", _truncate, args=("-weights", "init.caffemodel"),
        file="init.caffemodel", phrase=("NetParameter",)),
    Row("caffemodel_empty", "sgd", lambda w: (w / "empty.caffemodel").write_bytes(b""),
        args=("-weights", "empty.caffemodel"), file="empty.caffemodel", phrase=("empty",)),
    Row("caffemodel_is_a_jpeg", "sgd", _jpeg, args=("-weights", "photo.jpg"), file="photo.jpg",
        phrase=("NetParameter",)),
    Row("caffemodel_missing", "sgd", lambda w: None, args=("-weights", "nothere.caffemodel"),
        phrase=("nothere.caffemodel",)),
    Row("weight_shape_mismatch", "sgd", _net_edit("num_output: 32", "num_output: 16"),
        args=("-weights", "init.caffemodel"), file=NET, line=_layer_at("ip1"),
        layer=("ip1", "InnerProduct"), phrase=("init.caffemodel", "(32, 288)", "(16, 288)")),
    # solver / flags (solver.cpp InitTrainNet CHECK_EQ(num_train_nets, 1); caffe.cpp train())
    Row("solver_without_net", "sgd", lambda w: edit(w / SOLVER, 'net: "train_val.prototxt"', ""),
        file=SOLVER, phrase=("net",)),
    Row("weights_and_snapshot_together", "sgd", lambda w: None,
        args=("-weights", "init.caffemodel", "-snapshot", "x.solverstate"), phrase=("-snapshot", "-weights")),
    Row("solverstate_for_another_net", "sgd", _other_net_state, args=("-snapshot", "other.solverstate"),
        file=NET, line=_layer_at("ip1"), layer=("ip1", "InnerProduct"), phrase=("(32, 288)", "(16, 288)")),
    Row("solverstate_history_mismatch", "sgd", _state_history_mismatch, args=("-snapshot", "other.solverstate"),
        file="other.solverstate", phrase=("history",)),
    Row("solverstate_corrupt", "sgd", lambda w: (w / "bad.solverstate").write_bytes(b"\xff\xff\xff garbage"),
        args=("-snapshot", "bad.solverstate"), file="bad.solverstate", phrase=("SolverState",)),
    # image lists (image_data_layer.cpp: CHECK(cv_img.data) "Could not load", CHECK(!lines_.empty()))
    Row("image_missing", "image", lambda w: edit(w / "images.txt", "img05_c1.png 1", "img55_c1.png 1"),
        file="images.txt", line=6, layer=("data", "ImageData"), phrase=("img55_c1.png",)),
    Row("image_unreadable", "image", _image_dir, file="images.txt", line=6, layer=("data", "ImageData"),
        phrase=("img05_c1.png",)),
    Row("image_corrupt", "image", lambda w: (w / "img" / "img05_c1.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken"),
        file="images.txt", line=6, layer=("data", "ImageData"), phrase=("img05_c1.png",)),
    Row("image_list_empty", "image", lambda w: (w / "images.txt").write_text(""), file="images.txt",
        layer=("data", "ImageData"), phrase=("empty",)),
    Row("label_not_an_integer", "image", lambda w: edit(w / "images.txt", "img05_c1.png 1", "img05_c1.png one"),
        file="images.txt", line=6, layer=("data", "ImageData"), phrase=("'one'",)),
    Row("image_list_missing", "image", _net_edit('source: "images.txt"', 'source: "nolist.txt"'),
        file="nolist.txt", layer=("data", "ImageData"), phrase=("nolist.txt",)),
    # data_transformer.cpp InferBlobShape: CHECK_GE(img_height, crop_size) at layer set-up
    Row("crop_size_larger_than_image", "image", _net_edit("scale: 0.00390625", "scale: 0.00390625 crop_size: 500"),
        layer=("data", "ImageData"), phrase=("crop_size",)),
    Row("min_side_min_below_crop_size", "image",
        _net_edit("scale: 0.00390625", "scale: 0.00390625 crop_size: 8 min_side_min: 4 min_side_max: 10"),
        file=NET, line=_layer_at("data"), layer=("data", "ImageData"), phrase=("min_side_min", "crop_size")),
    # missing databases (db_lmdb.cpp: mdb_env_open CHECK; hdf5_data_layer.cpp: "Failed opening HDF5 file")
    Row("hdf5_list_missing", "sgd", _net_edit('source: "train_list.txt"', 'source: "nolist.txt"'),
        file="nolist.txt", layer=("data", "HDF5Data"), phrase=("nolist.txt",)),
    Row("hdf5_file_missing", "sgd", lambda w: (w / "train_list.txt").write_text("nothere.h5\n"),
        file="train_list.txt", line=1, layer=("data", "HDF5Data"), phrase=("nothere.h5",)),
    Row("lmdb_missing", "sgd",
        _net_edit('type: "HDF5Data"\n  top: "data"\n  top: "label"\n  include { phase: TRAIN }\n'
                  '  hdf5_data_param { source: "train_list.txt" batch_size: 32 shuffle: false }',
                  'type: "Data"\n  top: "data"\n  top: "label"\n  include { phase: TRAIN }\n'
                  '  data_param { source: "no_lmdb" backend: LMDB batch_size: 4 }'),
        file="no_lmdb", layer=("data", "Data"), phrase=("LMDB",)),
    # caffe.cpp: -gpu given explicitly on a machine without one
    Row("explicit_gpu_without_gpu", "sgd", lambda w: None, args=("-gpu", "0"), phrase=("GPU", "CPU")),
]


def _params(rows: list[Row]) -> list:
    out = []
    for row in rows:
        marks = list(row.marks)
        if row.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=row.xfail))
        out.append(pytest.param(row, id=row.name, marks=marks))
    return out


@pytest.mark.parametrize("row", _params(ROWS))
def test_bad_input(row: Row, request, capsys):
    if row.name == "explicit_gpu_without_gpu":
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    work = request.getfixturevalue("sgd_case" if row.case == "sgd" else "image_case")
    earlier = work / "snapshots" / "tinybn_iter_0.caffemodel"
    earlier.write_bytes(b"an earlier result that no failing run may touch")
    row.breaks(work)
    before = tree_digest(work)
    result = run_cli(capsys, "train", "-solver", SOLVER, *row.args)
    if row.file is not None:
        line = row.line(work) if callable(row.line) else row.line
        if line is None:  # file-level errors: "file: ..." or "file: layer 'x' (T): ..."
            assert result.error.split(":")[0] == row.file, result.error
            if row.layer is not None:
                assert f"layer '{row.layer[0]}' ({row.layer[1]})" in result.error, result.error
        else:
            assert_located(result.error, row.file, line, *(row.layer or (None, None)))
    elif row.layer is not None:
        assert f"layer '{row.layer[0]}' ({row.layer[1]})" in result.error, result.error
    for phrase in row.phrase:
        assert phrase in result.error, f"{phrase!r} not in {result.error!r}"
    assert tree_digest(work) == before, "a failing run changed files of the case"


def test_solver_mode_gpu_falls_back_to_cpu_with_a_warning(sgd_case, capsys):
    """solver_mode: GPU in a file (every book solver says so) trains on the CPU, with one warning."""
    import torch

    from caffelike.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    edit(sgd_case / SOLVER, "solver_mode: CPU", "solver_mode: GPU")
    edit(sgd_case / SOLVER, "max_iter: 40", "max_iter: 2")
    capsys.readouterr()
    assert main(["train", "-solver", SOLVER]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warnings = [l for l in err.splitlines() if l.startswith("W") and "GPU" in l and "CPU" in l]
    assert len(warnings) == 1, err[-3000:]


def test_unknown_command_and_flag(capsys):
    """A mistyped flag is a one-line error naming it, not an argparse usage dump or traceback."""
    result = run_cli(capsys, "train", "-solverr", "x.prototxt")
    assert "-solverr" in result.error


@pytest.mark.parametrize("command", ["test", "time"])
def test_bad_model_in_test_and_time(command, sgd_case, capsys):
    """``caffelike test`` / ``time`` report a broken -model the same way."""
    edit(sgd_case / NET, 'bottom: "pool1"', 'bottom: "pool9"')
    before = tree_digest(sgd_case)
    extra = ("-weights", "init.caffemodel", "-iterations", "1") if command == "test" else ("-iterations", "1")
    result = run_cli(capsys, command, "-model", NET, *extra)
    assert_located(result.error, NET, layer_line(sgd_case / NET, "ip1"), "ip1", "InnerProduct")
    assert tree_digest(sgd_case) == before


def test_test_command_weight_shape_mismatch(sgd_case, capsys):
    edit(sgd_case / NET, "num_output: 32", "num_output: 16")
    result = run_cli(capsys, "test", "-model", NET, "-weights", "init.caffemodel", "-iterations", "1")
    assert_located(result.error, NET, layer_line(sgd_case / NET, "ip1"), "ip1", "InnerProduct")
    assert "(32, 288)" in result.error and "(16, 288)" in result.error
