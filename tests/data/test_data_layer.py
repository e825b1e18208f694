"""Data layer (LMDB) against real Caffe's batches, and the dataset tools convert_imageset /
compute_image_mean (against real Caffe's LMDB, ImageData, and the numpy mean)."""
from __future__ import annotations

import pathlib
import shutil
import sys

import cv2
import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

from caffelike import cli
from caffelike.commands import compute_image_mean, convert_imageset
from caffelike.data.imageset import convert
from caffelike.errors import DataError
from caffelike.io import read_mean_file
from caffelike.layers.data import Data, ImageData
from caffelike.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
TESTS = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = TESTS / "golden" / "data"
MOUTH = TESTS.parent / "data" / "mouth"


def param(text: str) -> caffe_pb2.LayerParameter:
    return text_format.Parse(text, caffe_pb2.LayerParameter())


@pytest.fixture
def golden_dir(tmp_path, monkeypatch):
    """The golden folder with its LMDB, copied so LMDB may do as it likes in a writable place."""
    work = tmp_path / "golden"
    shutil.copytree(GOLDEN, work)
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("workers", [0, 2])
def test_golden_lmdb_batches(golden_dir, workers):
    net = text_format.Parse((golden_dir / "data_layer.prototxt").read_text(), caffe_pb2.NetParameter())
    layer = Data(net.layer[0], [], TEST)
    layer.set_num_workers(workers)  # workers get the records' bytes, never the LMDB handle
    golden = np.load(golden_dir / "data_layer.npz")
    assert layer.top_shapes([]) == [(25, 3, 44, 44), (25,)]
    for b in range(3):
        data, label = layer.forward()
        # data/README.md: JPEG decoding may differ by one grey level between OpenCV builds.
        np.testing.assert_allclose(data.numpy(), golden[f"batch{b}/data"], rtol=0, atol=1.01 * 0.017)
        np.testing.assert_array_equal(label.numpy(), golden[f"batch{b}/label"])
    layer.close()


def test_convert_imageset_writes_the_lmdb_real_caffe_wrote(golden_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(MOUTH)
    out = tmp_path / "ours_lmdb"
    rc = cli.main(["convert_imageset", "-resize_height", "52", "-resize_width", "52", "-encoded",
                   "-encode_type", "jpg", "./", str(golden_dir / "train200.txt"), str(out)])
    assert rc == 0
    with lmdb.open(str(out), readonly=True, lock=False) as ours, \
            lmdb.open(str(golden_dir / "caffe_train200_lmdb"), readonly=True, lock=False) as caffe:
        ours_items = list(ours.begin().cursor())
        caffe_items = list(caffe.begin().cursor())
    assert [k for k, _ in ours_items] == [k for k, _ in caffe_items]
    for (key, a), (_, b) in zip(ours_items, caffe_items):
        da, db = caffe_pb2.Datum.FromString(a), caffe_pb2.Datum.FromString(b)
        assert (da.label, da.encoded) == (db.label, db.encoded)
        pa = cv2.imdecode(np.frombuffer(da.data, np.uint8), cv2.IMREAD_UNCHANGED).astype(int)
        pb = cv2.imdecode(np.frombuffer(db.data, np.uint8), cv2.IMREAD_UNCHANGED).astype(int)
        assert np.abs(pa - pb).max() <= 1, key  # same JPEG up to the encoder's build


def small_list(tmp_path, n=10) -> str:
    lines = (MOUTH / "train.txt").read_text().splitlines()[:n]
    path = tmp_path / "small.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("flags, size", [
    ([], 50),                                   # raw CHW bytes
    (["-encoded"], 0),                          # JPEG file bytes kept as they are
    (["-encoded", "-encode_type", "png"], 50),  # resized, then re-encoded losslessly
    (["-gray=true"], 50),
])
def test_our_lmdb_reads_like_image_data(tmp_path, monkeypatch, flags, size):
    listing = small_list(tmp_path)
    monkeypatch.chdir(MOUTH)
    db = str(tmp_path / "db")
    assert convert_imageset.main([*flags, f"-resize_height={size}", f"-resize_width={size}",
                                  "./", listing, db]) == 0
    color = "false" if "-gray=true" in flags else "true"
    transform = "transform_param { crop_size: 40 mean_value: 100 scale: 0.5 }"
    image = ImageData(param(f'name: "d" type: "ImageData" top: "data" top: "label" {transform} '
                            f'image_data_param {{ source: "{listing}" batch_size: 4 root_folder: "./" '
                            f'new_height: {size} new_width: {size} is_color: {color} }}'), [], TEST)
    data = Data(param(f'name: "d" type: "Data" top: "data" top: "label" {transform} '
                      f'data_param {{ source: "{db}" batch_size: 4 backend: LMDB }}'), [], TEST)
    assert image.top_shapes([]) == data.top_shapes([])
    for _ in range(3):  # wraps around the 10 records
        for a, b in zip(image.forward(), data.forward()):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_encoded_keeps_the_file_bytes_without_resize(tmp_path, monkeypatch):
    listing = small_list(tmp_path, n=3)
    monkeypatch.chdir(MOUTH)
    db = str(tmp_path / "db")
    convert("./", listing, db, encoded=True)
    first = pathlib.Path(listing).read_text().splitlines()[0].rsplit(" ", 1)[0]
    with lmdb.open(db, readonly=True, lock=False) as env:
        key, value = next(iter(env.begin().cursor()))
    assert key == b"00000000_" + first.encode()
    assert caffe_pb2.Datum.FromString(value).data == (MOUTH / first).read_bytes()


def test_compute_image_mean_is_the_numpy_mean(tmp_path, monkeypatch):
    listing = small_list(tmp_path, n=7)
    monkeypatch.chdir(MOUTH)
    db, mean_file = str(tmp_path / "db"), str(tmp_path / "mean.binaryproto")
    convert("./", listing, db, resize_height=48, resize_width=48)
    assert compute_image_mean.main([db, mean_file]) == 0
    paths = [ln.rsplit(" ", 1)[0] for ln in pathlib.Path(listing).read_text().splitlines()]
    stack = np.stack([cv2.resize(cv2.imread(p), (48, 48)).transpose(2, 0, 1) for p in paths])
    blob = caffe_pb2.BlobProto.FromString(pathlib.Path(mean_file).read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 48, 48)
    np.testing.assert_allclose(read_mean_file(mean_file), stack.mean(axis=0), rtol=1e-6)
    # and it works as a Data layer's mean_file (subtracted at the centre-crop offset)
    data = Data(param(f'name: "d" type: "Data" top: "data" data_param {{ source: "{db}" batch_size: 7 }} '
                      f'transform_param {{ crop_size: 40 mean_file: "{mean_file}" }}'), [], TEST)
    (batch,) = data.forward()
    mean = read_mean_file(mean_file)
    np.testing.assert_array_equal(batch.numpy(), (stack[:, :, 4:44, 4:44].astype(np.float32) - mean[:, 4:44, 4:44]))


def test_data_layer_one_top_and_shards(tmp_path, monkeypatch):
    listing = small_list(tmp_path, n=6)
    monkeypatch.chdir(MOUTH)
    db = str(tmp_path / "db")
    convert("./", listing, db)
    labels = [int(ln.rsplit(" ", 1)[1]) for ln in pathlib.Path(listing).read_text().splitlines()]
    p = param(f'name: "d" type: "Data" top: "data" top: "label" data_param {{ source: "{db}" batch_size: 3 }}')
    for rank in range(2):
        layer = Data(p, [], TRAIN)
        layer.set_shard(rank, 2)
        assert layer.forward()[1].int().tolist() == labels[rank::2]
    one = Data(param(f'name: "d" type: "Data" top: "data" data_param {{ source: "{db}" batch_size: 2 }}'), [], TEST)
    assert len(one.forward()) == 1 and one.top_shapes([]) == [(2, 3, 60, 60)]


def test_missing_lmdb_and_leveldb_backend(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^nodb: layer 'd' \(Data\): cannot open LMDB 'nodb'"):
        Data(param('name: "d" type: "Data" top: "data" '
                   'data_param { source: "nodb" batch_size: 2 backend: LMDB }'), [], TEST)
    # caffe.proto's default backend is LEVELDB
    with pytest.raises(DataError, match=r"^nodb: layer 'd' \(Data\): cannot open LevelDB 'nodb'"):
        Data(param('name: "d" type: "Data" top: "data" data_param { source: "nodb" batch_size: 2 }'), [], TEST)
    monkeypatch.setitem(sys.modules, "plyvel", None)  # a machine without the LevelDB binding
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="backend LEVELDB needs a LevelDB binding"):
        Data(param('name: "d" type: "Data" top: "data" '
                   'data_param { source: "x" batch_size: 2 backend: LEVELDB }'), [], TEST)


def test_bad_record_names_db_and_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with lmdb.open("bad", map_size=1 << 20) as env:
        with env.begin(write=True) as txn:
            datum = caffe_pb2.Datum(channels=3, height=2, width=2, data=bytes(12), label=1)
            txn.put(b"00000000_a", datum.SerializeToString())
            txn.put(b"00000001_b", caffe_pb2.Datum(encoded=True, data=b"junk").SerializeToString())
    layer = Data(param('name: "d" type: "Data" top: "data" data_param { source: "bad" batch_size: 2 }'), [], TEST)
    with pytest.raises(DataError, match=r"^bad: layer 'd' \(Data\): key '00000001_b': encoded image cannot be decoded$"):
        layer.forward()


def test_convert_imageset_errors_exit_nonzero(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(MOUTH)
    listing = tmp_path / "bad.txt"
    listing.write_text("0/missing.jpg 0\n")
    assert cli.main(["convert_imageset", "./", str(listing), str(tmp_path / "db")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # log lines, then the error
    assert err.endswith("bad.txt:1: cannot read image './0/missing.jpg': no such file")
    assert err.startswith("caffelike convert_imageset: error: ") and not (tmp_path / "db").exists()
    listing.write_text("0/x.jpg zero\n")
    assert cli.main(["convert_imageset", "./", str(listing), str(tmp_path / "db")]) == 1
    assert "bad.txt:1: label 'zero' is not an integer" in capsys.readouterr().err
    assert cli.main(["compute_image_mean", str(tmp_path / "nodb")]) == 1
    assert "cannot open LMDB" in capsys.readouterr().err


def test_convert_imageset_shuffle_is_a_seeded_permutation(tmp_path, monkeypatch):
    listing = small_list(tmp_path, n=8)
    monkeypatch.chdir(MOUTH)
    keys = []
    for name in ("a", "b"):
        assert convert_imageset.main(["-shuffle", "-random_seed=3", "./", listing, str(tmp_path / name)]) == 0
        with lmdb.open(str(tmp_path / name), readonly=True, lock=False) as env:
            keys.append([k.decode() for k, _ in env.begin().cursor()])
    paths = [ln.rsplit(" ", 1)[0] for ln in pathlib.Path(listing).read_text().splitlines()]
    assert keys[0] == keys[1]
    assert [k.split("_", 1)[0] for k in keys[0]] == [f"{i:08d}" for i in range(8)]
    assert sorted(k.split("_", 1)[1] for k in keys[0]) == sorted(paths)
    assert [k.split("_", 1)[1] for k in keys[0]] != paths


def test_convert_imageset_leveldb_without_binding(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "plyvel", None)  # a machine without the LevelDB binding
    listing = small_list(tmp_path, n=2)
    monkeypatch.chdir(MOUTH)
    assert cli.main(["convert_imageset", "-backend", "leveldb", "./", listing, str(tmp_path / "db")]) == 1
    assert "backend leveldb needs a LevelDB binding" in capsys.readouterr().err
