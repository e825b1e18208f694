"""``caffelike extract_features`` and ``caffelike draw_net``.

extract_features: the book's Simpleconv3, TEST phase ImageData over the val list, one batch of
16: its ``ip2`` values must be real Caffe's (tests/golden/nets/simpleconv3/blobs.json holds all
32 values: the golden net ran the same 16 images, preprocessed by Caffe's ImageData layer).
"""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from caffelike.cli import main as cli_main
from caffelike.proto import caffe_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "nets" / "simpleconv3"
TRAIN = ROOT / "models" / "mouth" / "simpleconv3" / "train.prototxt"
WEIGHTS = ROOT / "tests" / "data" / "corpus" / "longpeng2008__yousan.ai" / "simpleconv3" / "test_models" / \
    "simpleconv3__iter_10000.caffemodel"


def _golden_ip2() -> np.ndarray:
    blob = json.loads((GOLDEN / "blobs.json").read_text())["blobs"]["ip2"]
    return np.array(blob["first32"], dtype=np.float32).reshape(blob["shape"])


def test_extract_features_lmdb_matches_caffe(tmp_path: pathlib.Path, monkeypatch) -> None:
    import lmdb

    monkeypatch.chdir(ROOT)  # the prototxt's list paths are relative to the repository root
    db, db2 = tmp_path / "ip2_lmdb", tmp_path / "prob_lmdb"
    rc = cli_main(["extract_features", str(WEIGHTS), str(TRAIN), "ip2,conv3", f"{db},{db2}", "1", "lmdb"])
    assert rc == 0
    env = lmdb.open(str(db), readonly=True, lock=False)
    with env.begin() as txn:
        items = list(txn.cursor())
    env.close()
    assert [k for k, _ in items] == [f"{i:010d}".encode() for i in range(16)]
    values = []
    for _, v in items:
        d = caffe_pb2.Datum()
        d.ParseFromString(v)
        assert (d.channels, d.height, d.width) == (2, 1, 1) and not d.data
        values.append(list(d.float_data))
    expect = _golden_ip2()
    np.testing.assert_allclose(np.array(values), expect, rtol=1e-4, atol=1e-5 * float(np.abs(expect).max()))
    env = lmdb.open(str(db2), readonly=True, lock=False)
    with env.begin() as txn:
        d = caffe_pb2.Datum()
        d.ParseFromString(txn.get(b"0000000000"))
    env.close()
    assert (d.channels, d.height, d.width) == (48, 6, 6) and len(d.float_data) == 48 * 36


def test_extract_features_hdf5(tmp_path: pathlib.Path, monkeypatch) -> None:
    import h5py

    monkeypatch.chdir(ROOT)
    out = tmp_path / "ip2.h5"
    assert cli_main(["extract_features", str(WEIGHTS), str(TRAIN), "ip2", str(out), "2", "hdf5"]) == 0
    with h5py.File(out, "r") as f:
        data = f["ip2"][...]
    assert data.shape == (32, 2)
    expect = _golden_ip2()
    np.testing.assert_allclose(data[:16], expect, rtol=1e-4, atol=1e-5 * float(np.abs(expect).max()))


def test_extract_features_errors(tmp_path: pathlib.Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert cli_main(["extract_features", str(WEIGHTS), str(TRAIN), "nope", str(tmp_path / "x"), "1", "lmdb"]) == 1
    assert "nope" in capsys.readouterr().err
    assert cli_main(["extract_features", str(WEIGHTS)]) == 1
    assert "usage" in capsys.readouterr().err


def test_draw_net_dot_always(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "net.dot"
    assert cli_main(["draw_net", str(TRAIN), str(out), "--phase", "TEST", "--rankdir", "TB"]) == 0
    text = out.read_text()
    assert text.startswith("digraph simpleconv3 {") and "rankdir=TB" in text
    # Caffe's draw.py labels (one line for TB): name, (Type), kernel size/stride/pad; num_output on the edge
    conv1 = '"conv1 (Convolution) kernel size: 3 stride: 2 pad: 1"'
    for needle in ('"conv1/bn (BatchNorm)"', f"{conv1} -> conv1 [label=12];", '"loss (SoftmaxWithLoss)"'):
        assert needle in text
    # TEST phase: the TRAIN data layer (same name, so the same node, as in Caffe) adds no edge
    assert text.count('"data (ImageData)" -> data [') == 1


def test_draw_net_png_or_clear_message(tmp_path: pathlib.Path, capsys) -> None:
    out = tmp_path / "net.png"
    rc = cli_main(["draw_net", str(TRAIN), str(out)])
    if shutil.which("dot"):
        assert rc == 0 and out.read_bytes()[:4] == b"\x89PNG"
    else:
        assert rc == 1
        err = capsys.readouterr().err
        assert "graphviz" in err.lower() and "Traceback" not in err
