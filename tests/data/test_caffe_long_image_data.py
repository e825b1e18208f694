"""ImageData and Data with the book fork's fields against the real fork's golden batches.

Cases: tests/golden/caffe_long/data/{ImageData__*, Data__*} (copied from
../shared/golden/caffe_long/data, see tests/golden/caffe_long/README.md: Caffe_Long commit
ecdb08d, CPU, float32), each run through the pycaffe API from its own folder
(``caffe.Net("net.prototxt", phase)``, ``forward()`` per recorded batch). Tolerances are the
README's: pixels within ``1.01 * scale`` (libjpeg builds may differ by a grey level), labels
exactly. The fork's label tops are ``(N, label_size, 1, 1)`` (ImageData) and ``(N,) * K``
(Data, K labels); caffelike keeps BVLC's ``(N,)`` for one label, ``(N, label_size, 1, 1)``
for ImageData's label_size > 1 and ``(N, K)`` for Data, so labels are compared by value.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from google.protobuf import text_format

import caffelike as caffe
from caffelike.proto import caffe_pb2

CASES = pathlib.Path(__file__).resolve().parent.parent / "golden" / "caffe_long" / "data"
CASE_NAMES = ("ImageData__crop_h_w_ignored_center_crop48", "ImageData__min_side40_is_ignored",
              "ImageData__test_min_side_min56_max72_crop56",
              "ImageData__train_norandom_newhw_2labels", "Data__lmdb_2labels_crop48")


def _scale(case: pathlib.Path) -> float:
    net = text_format.Parse((case / "net.prototxt").read_text(), caffe_pb2.NetParameter())
    return float(net.layer[0].transform_param.scale)


def _our_label_shape(golden_shape: tuple[int, ...], type_name: str) -> tuple[int, ...]:
    """caffelike's label top for the fork's: BVLC's (N,) for one label, else (N, K[, 1, 1])."""
    if type_name == "Data":
        n, k = golden_shape[0], len(golden_shape)
        return (n,) if k == 1 else (n, k)
    n, k = golden_shape[0], golden_shape[1]
    return (n,) if k == 1 else (n, k, 1, 1)


# every case inline; in worker processes the batch-fitting and the multi-label case
RUNS = [(name, "0") for name in CASE_NAMES] + [("ImageData__min_side40_is_ignored", "2"),
                                               ("Data__lmdb_2labels_crop48", "2")]


@pytest.mark.parametrize("name,workers", RUNS)
def test_golden_batches_through_pycaffe(name, workers, monkeypatch):
    case = CASES / name
    info = json.loads((case / "case.json").read_text())
    golden = np.load(case / "data.npz")
    monkeypatch.chdir(case)  # the fork's cases run from their folder (relative source)
    monkeypatch.setenv("CAFFELIKE_DATA_WORKERS", workers)
    phase = caffe.TRAIN if info["phase"] == "TRAIN" else caffe.TEST
    net = caffe.Net("net.prototxt", phase)
    atol = 1.01 * _scale(case)
    for b in range(info["batches"]):
        net.forward()
        data, label = net.blobs["data"].data, net.blobs["label"].data
        want_data, want_label = golden[f"batch{b}/data"], golden[f"batch{b}/label"]
        assert data.shape == want_data.shape == tuple(info["tops"]["data"])
        np.testing.assert_allclose(data, want_data, rtol=0, atol=atol, err_msg=f"{name} batch{b}")
        assert label.shape == _our_label_shape(want_label.shape, info["type"])
        n_values = label.size
        np.testing.assert_array_equal(label.ravel(), want_label.ravel()[:n_values])
        # the fork's (N,)*K Data label blob: only the first N*K values are written
        assert not want_label.ravel()[n_values:].any()


def test_multi_label_lmdb_matches_its_contents_listing():
    """The LMDB's labels, read from the records' wire bytes, are the ones the case lists."""
    from caffelike.data.sources import KeyValueDB, datum_labels

    case = CASES / "Data__lmdb_2labels_crop48"
    listed = {}
    for line in (case / "lmdb_contents.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1].lstrip("-").isdigit():
            listed[parts[0]] = [int(p) for p in parts[-2:]]
    db = KeyValueDB(str(case / "lmdb"), "lmdb")
    got = {db.keys[i].decode(): datum_labels(db.get(i)[1]) for i in range(len(db))}
    assert listed and got == listed
