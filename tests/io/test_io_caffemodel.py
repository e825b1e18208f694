"""Binary nets (.caffemodel) and solver states: read, upgrade, arrays equal Caffe's records."""
from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import numpy as np
import pytest

from caffelike.errors import WeightsError
from caffelike.io import (load_weights, read_caffemodel, read_solverstate, write_caffemodel,
                          write_solverstate)
from caffelike.io.blobs import legacy_shape_fits
from caffelike.io.caffemodel import read_binary_net
from caffelike.proto import caffe_pb2

TESTS = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = TESTS / "golden"
CORPUS = TESTS / "data" / "corpus"

LAYER_CASES = sorted(p.parent for p in (GOLDEN / "layers").glob("*/weights.caffemodel"))
NET_CASES = sorted(p.parent for p in (GOLDEN / "nets").glob("*/weights.caffemodel"))
SOLVER_SNAPSHOTS = sorted((GOLDEN / "solvers").glob("*/snapshots/*.caffemodel"))
ALL_MODELS = sorted({*GOLDEN.glob("**/*.caffemodel"), *CORPUS.glob("**/*.caffemodel")})
# Caffe forks write their extra fields (unknown to BVLC's caffe.proto) in field order; protobuf
# keeps them, but re-serialises unknown fields after the known ones.
FORK_MODELS = {"golden/nets/book_mobilenet_faceseg/weights.caffemodel",
               "data/corpus/longpeng2008__yousan.ai/face_book_ch8/mobilenet_face_seg_finetune_iter_100000.caffemodel",
               "data/corpus/longpeng2008__yousan.ai/photo_book_ch3/pretrained_model.caffemodel"}


def _rel(path: pathlib.Path) -> str:
    return str(path.relative_to(TESTS))


@pytest.mark.parametrize("path", ALL_MODELS, ids=_rel)
def test_every_caffemodel_reads_and_round_trips(path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    weights = load_weights(path)
    assert weights and all(a.dtype == np.float32 for arrays in weights.values() for a in arrays)
    net = read_caffemodel(path)
    assert not len(net.layers) and all(l.type for l in net.layer)
    raw = read_binary_net(path)
    out = tmp_path / "copy.caffemodel"
    write_caffemodel(raw, out)
    if _rel(path) in FORK_MODELS:
        assert read_binary_net(out) == raw
    else:
        assert out.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda p: p.name)
def test_layer_case_params(case: pathlib.Path) -> None:
    layer_name = json.loads((case / "case.json").read_text())["layer_name"]
    data = np.load(case / "data.npz")
    arrays = load_weights(case / "weights.caffemodel")[layer_name]
    keys = sorted((k for k in data.files if k.startswith("param/")), key=lambda k: int(k[6:]))
    assert len(arrays) == len(keys)
    for key in keys:
        expected = data[key]
        got = arrays[int(key[6:])]
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", NET_CASES, ids=lambda p: p.name)
def test_net_case_blob_hashes(case: pathlib.Path) -> None:
    record = json.loads((case / "blobs.json").read_text())
    weights = load_weights(case / "weights.caffemodel")
    for entry in record["params"]:
        arrays = weights[entry["layer"]]
        assert len(arrays) == len(entry["blobs"])
        for got, want in zip(arrays, entry["blobs"]):
            shape = tuple(want["shape"])
            # a legacy blob (num, channels, height, width) fits as in Caffe's ShapeEquals
            assert got.shape == shape or legacy_shape_fits(got.shape, shape)
            got = got.reshape(shape)
            digest = hashlib.sha256(np.ascontiguousarray(got, dtype="<f4").tobytes()).hexdigest()
            assert digest == want["sha256"], entry["layer"]
            assert got.size == want["count"]
            np.testing.assert_allclose(float(got.astype(np.float64).sum()), want["sum"], rtol=1e-9)
            np.testing.assert_array_equal(got.ravel()[:8], np.float32(want["first8"]))


def test_legacy_v1_caffemodel_is_upgraded() -> None:
    path = GOLDEN / "nets" / "cifar10_quick" / "weights.caffemodel"
    raw = read_binary_net(path)
    assert len(raw.layers) and not len(raw.layer)
    net = read_caffemodel(path)
    assert [l.type for l in net.layer if len(l.blobs)] == ["Convolution"] * 3 + ["InnerProduct"] * 2
    assert load_weights(path)["conv1"][1].shape == (1, 1, 1, 32)


@pytest.mark.parametrize("snapshot", SOLVER_SNAPSHOTS, ids=_rel)
def test_solver_snapshots_equal_trajectory(snapshot: pathlib.Path) -> None:
    case = snapshot.parents[1].name
    iteration = int(snapshot.stem.rsplit("_", 1)[1])
    table = np.load(GOLDEN / "io" / "snapshot_params.npz")
    prefix = f"{case}/iter_{iteration}/"
    keys = [k for k in table.files if k.startswith(prefix)]
    assert keys
    weights = load_weights(snapshot)
    for key in keys:
        layer, index = key[len(prefix):].rsplit("_", 1)
        np.testing.assert_array_equal(weights[layer][int(index)], table[key])


SOLVERSTATES = sorted({*GOLDEN.glob("**/*.solverstate"), *CORPUS.glob("**/*.solverstate")})


@pytest.mark.parametrize("path", SOLVERSTATES, ids=_rel)
def test_solverstate_reads_and_round_trips(path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    state = read_solverstate(path)
    if "snapshots" in path.parts:
        iteration = int(path.stem.rsplit("_", 1)[1])
        assert state.iter == iteration
        assert state.learned_net == f"snapshots/{path.stem}.caffemodel"
    assert len(state.history)
    out = tmp_path / "copy.solverstate"
    write_solverstate(state, out)
    assert out.read_bytes() == path.read_bytes()


def test_weights_errors(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError) as info:
        load_weights(empty)
    assert str(info.value) == f"{empty}: empty weights file; expected a binary NetParameter (.caffemodel)"

    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes((GOLDEN / "nets" / "lenet" / "weights.caffemodel").read_bytes()[:5000])
    with pytest.raises(WeightsError) as info:
        load_weights(truncated)
    assert str(info.value) == (f"{truncated}: not a binary NetParameter (.caffemodel): truncated "
                               "or corrupt protobuf data")

    prototxt = CORPUS / "BVLC__caffe/examples/mnist/lenet.prototxt"
    with pytest.raises(WeightsError) as info:
        load_weights(prototxt)
    assert str(info.value) == (f"{prototxt}: not a binary NetParameter (.caffemodel): it looks "
                               "like a text prototxt; pass it as the net definition, not as weights")

    mean = CORPUS / "natanielruiz__net-archive/places205-alexnet/places205CNN_mean.binaryproto"
    with pytest.raises(WeightsError, match=r"places205CNN_mean.binaryproto: not a binary NetParameter \(.caffemodel\): it holds no layers"):
        load_weights(mean)

    with pytest.raises(WeightsError, match=r"missing.caffemodel: cannot read weights file"):
        load_weights(tmp_path / "missing.caffemodel")


def test_solverstate_errors(tmp_path: pathlib.Path) -> None:
    model = GOLDEN / "nets" / "lenet" / "weights.caffemodel"
    with pytest.raises(WeightsError) as info:
        read_solverstate(model)
    assert str(info.value) == (f"{model}: not a binary SolverState (.solverstate): no iteration "
                               "and no history (a .caffemodel given as solver state?)")
    empty = tmp_path / "e.solverstate"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match=r"e.solverstate: empty solver state file"):
        read_solverstate(empty)


def test_load_weights_needs_no_torch() -> None:
    import subprocess

    code = ("import sys; from caffelike.io import load_weights; "
            f"w = load_weights({str(GOLDEN / 'nets' / 'lenet' / 'weights.caffemodel')!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(len(w))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"


def test_hdf5_weights(tmp_path: pathlib.Path) -> None:
    import h5py

    path = tmp_path / "w.caffemodel.h5"
    with h5py.File(path, "w") as f:  # Caffe's layout (Net::ToHDF5): data/<layer>/<blob index>
        group = f.create_group("data").create_group("conv1")
        group["0"] = np.ones((2, 1, 3, 3), np.float32)
        group["1"] = np.zeros(2, np.float32)
    weights = load_weights(path)
    assert [a.shape for a in weights["conv1"]] == [(2, 1, 3, 3), (2,)]


def test_caffe_long_models_load_and_other_fork_fields_are_reported(caplog: pytest.LogCaptureFixture,
                                                                   tmp_path: pathlib.Path) -> None:
    """The book's model, written by Caffe_Long, uses that fork's TransformationParameter fields
    (11, 12, 20), which our schema holds: it loads silently. A field no schema here knows (999
    in a transform_param) is reported by number, once."""
    import logging

    book = CORPUS / "longpeng2008__yousan.ai/photo_book_ch3/pretrained_model.caffemodel"
    with caplog.at_level(logging.WARNING, logger="caffelike"):
        load_weights(book)
    assert [r.getMessage() for r in caplog.records] == []

    net = read_caffemodel(GOLDEN / "nets" / "lenet" / "weights.caffemodel")
    transform = caffe_pb2.TransformationParameter(scale=0.5)
    transform.MergeFromString(transform.SerializeToString() + bytes([0xB8, 0x3E, 0x01]))  # field 999, varint 1
    net.layer[0].transform_param.CopyFrom(transform)
    path = tmp_path / "other_fork.caffemodel"
    path.write_bytes(net.SerializeToString())
    with caplog.at_level(logging.WARNING, logger="caffelike"):
        load_weights(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: ignored fields unknown to BVLC Caffe's caffe.proto (written by a Caffe fork), "
        "by field number: caffe.TransformationParameter: 999"]


