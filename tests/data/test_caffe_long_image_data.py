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


# -- label_size and multi-label records beyond the goldens -----------------------------------

def _write_images(folder: pathlib.Path, names: list[str]) -> None:
    import cv2

    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))


def _image_data(source: str, extra: str = "") -> caffe_pb2.LayerParameter:
    return text_format.Parse(f'name: "data" type: "ImageData" top: "data" top: "label" '
                             f'image_data_param {{ source: "{source}" batch_size: 2 {extra} }}',
                             caffe_pb2.LayerParameter())


def test_label_size_one_keeps_bvlc_list_and_shape(tmp_path, monkeypatch):
    from caffelike.layers.data import ImageData

    monkeypatch.chdir(tmp_path)
    _write_images(tmp_path, ["a b.png", "c.png"])
    (tmp_path / "l.txt").write_text("a b.png 3\nc.png 4\n")  # BVLC: split at the last space
    layer = ImageData(_image_data("l.txt", "label_size: 1"), [], caffe.TEST)
    assert layer.top_shapes([])[1] == (2,)
    assert layer.forward()[1].tolist() == [3.0, 4.0]


def test_label_size_errors_name_list_line_and_layer(tmp_path, monkeypatch):
    from caffelike.errors import DataError, LayerError
    from caffelike.layers.data import ImageData

    monkeypatch.chdir(tmp_path)
    _write_images(tmp_path, ["a.png", "c.png"])
    (tmp_path / "l.txt").write_text("a.png 3 1\nc.png 4\n")
    with pytest.raises(DataError, match=r"^l\.txt:2: layer 'data' \(ImageData\): expected 'path' and 2 labels"):
        ImageData(_image_data("l.txt", "label_size: 2"), [], caffe.TEST)
    with pytest.raises(LayerError, match=r"layer 'data' \(ImageData\): image_data_param.label_size must be >= 1"):
        ImageData(_image_data("l.txt", "label_size: 0"), [], caffe.TEST)
    (tmp_path / "l.txt").write_text("a.png 3 1\nmissing.png 4 2\n")
    layer = ImageData(_image_data("l.txt", "label_size: 2"), [], caffe.TEST)
    with pytest.raises(DataError, match=r"^l\.txt:2: layer 'data' \(ImageData\): cannot read image 'missing\.png'"):
        layer.forward()


def _datum_bytes(labels: list[int], packed: bool = False) -> bytes:
    """A raw 1x2x2 Datum with these labels, written as the fork's repeated field 5."""
    body = caffe_pb2.Datum(channels=1, height=2, width=2, data=bytes([1, 2, 3, 4])).SerializeToString()

    def varint(v: int) -> bytes:
        v &= (1 << 64) - 1
        out = b""
        while True:
            byte, v = v & 0x7F, v >> 7
            out += bytes([byte | (0x80 if v else 0)])
            if not v:
                return out
    if packed:
        payload = b"".join(varint(v) for v in labels)
        return body + b"\x2a" + varint(len(payload)) + payload
    return body + b"".join(b"\x28" + varint(v) for v in labels)


def test_datum_labels_reads_the_forks_repeated_field():
    from caffelike.data.sources import datum_labels

    assert datum_labels(_datum_bytes([1, 0])) == [1, 0]
    assert datum_labels(_datum_bytes([7, -2, 300])) == [7, -2, 300]
    assert datum_labels(_datum_bytes([5, -1], packed=True)) == [5, -1]
    one = caffe_pb2.Datum(channels=1, height=1, width=1, data=b"\x00", label=9).SerializeToString()
    assert datum_labels(one) == [9]
    parsed = caffe_pb2.Datum.FromString(_datum_bytes([1, 2]))  # BVLC's schema: the last one
    assert parsed.label == 2
    with pytest.raises(ValueError):
        datum_labels(b"\x28")


def test_multi_label_lmdb_and_bvlc_single_label(tmp_path, monkeypatch):
    import lmdb

    from caffelike.errors import DataError
    from caffelike.layers.data import Data

    monkeypatch.chdir(tmp_path)
    records = {"multi": [[1, 0, 5], [0, 1, 6], [2, 2, 7]], "single": [[3], [4], [5]],
               "mixed": [[1, 0], [2]]}
    for name, rows in records.items():
        with lmdb.open(name, map_size=1 << 20) as env, env.begin(write=True) as txn:
            for i, labels in enumerate(rows):
                txn.put(f"{i:08d}".encode(), _datum_bytes(labels))

    def layer(source: str) -> Data:
        return Data(text_format.Parse(f'name: "d" type: "Data" top: "data" top: "label" '
                                      f'data_param {{ source: "{source}" batch_size: 2 backend: LMDB }}',
                                      caffe_pb2.LayerParameter()), [], caffe.TEST)

    multi = layer("multi")
    assert multi.top_shapes([]) == [(2, 1, 2, 2), (2, 3)]
    assert multi.forward()[1].tolist() == [[1, 0, 5], [0, 1, 6]]
    assert multi.forward()[1].tolist() == [[2, 2, 7], [1, 0, 5]]
    single = layer("single")
    assert single.top_shapes([])[1] == (2,) and single.forward()[1].tolist() == [3.0, 4.0]
    with pytest.raises(DataError, match=r"^mixed: layer 'd' \(Data\): key '00000001': 1 label, but the "
                                        r"first record has 2"):
        layer("mixed").forward()


def test_fork_batch_of_mixed_sizes_cuts_larger_and_refuses_smaller(tmp_path, monkeypatch):
    """Under a fork field (no crop): later larger images are cut top-left, smaller refused;
    BVLC's transform_param refuses any other size, as before."""
    import cv2

    from caffelike.errors import DataError
    from caffelike.layers.data import ImageData

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    sizes = {"a.png": (6, 5), "b.png": (8, 7), "c.png": (5, 5)}
    for name, (h, w) in sizes.items():
        cv2.imwrite(name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (tmp_path / "l.txt").write_text("a.png 0\nb.png 1\nc.png 2\n")

    def layer(transform: str) -> ImageData:
        lp = _image_data("l.txt")
        text_format.Parse(transform, lp.transform_param)
        return ImageData(lp, [], caffe.TEST)

    data, _ = layer("min_side: 40").forward()
    np.testing.assert_array_equal(data[1].numpy(), cv2.imread("b.png")[:6, :5].transpose(2, 0, 1))
    (tmp_path / "l.txt").write_text("a.png 0\nc.png 2\n")
    with pytest.raises(DataError, match=r"^l\.txt:2: layer 'data' \(ImageData\): image 'c\.png': image of "
                                        r"5x5 is smaller than the batch's first image \(6x5\)"):
        layer("min_side: 40").forward()
    (tmp_path / "l.txt").write_text("a.png 0\nb.png 1\n")
    with pytest.raises(DataError, match=r"b\.png'?: gives a 3x8x7 blob but the batch started with 3x6x5"):
        layer("").forward()
