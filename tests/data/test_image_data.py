"""ImageData: real Caffe's batches (golden), epoch order, shuffle, skip, shards, workers, errors,
and the book's mouth data with the book's transform settings."""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from caffelike.errors import DataError, LayerError
from caffelike.layers import LAYERS
from caffelike.layers.data import ImageData
from caffelike.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
TESTS = pathlib.Path(__file__).resolve().parents[1]
GOLDEN_PNG = TESTS / "golden" / "solvers" / "imagedata_png"
MOUTH = TESTS.parent / "data" / "mouth"


def layer_param(text: str) -> caffe_pb2.LayerParameter:
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def image_data(source: str, batch: int = 4, extra: str = "", transform: str = "",
               name: str = "data") -> caffe_pb2.LayerParameter:
    return layer_param(f'name: "{name}" type: "ImageData" top: "data" top: "label" '
                       f'image_data_param {{ source: "{source}" batch_size: {batch} {extra} }} '
                       f'transform_param {{ {transform} }}')


@pytest.fixture
def golden_png(monkeypatch):
    monkeypatch.chdir(GOLDEN_PNG)  # Caffe resolves source and root_folder from the cwd
    net = text_format.Parse((GOLDEN_PNG / "train_val.prototxt").read_text(), caffe_pb2.NetParameter())
    return net.layer[0], np.load(GOLDEN_PNG / "first_batches.npz")


def test_registered_as_data_layer():
    info = LAYERS.get("ImageData")
    assert info.is_data and info.bottoms == (0, 0) and info.tops == (2, 2)


@pytest.mark.parametrize("workers", [0, 2])
def test_golden_first_batches_are_equal_exactly(golden_png, workers):
    param, golden = golden_png
    layer = ImageData(param, [], TRAIN)
    layer.set_num_workers(workers)
    assert layer.top_shapes([]) == [(4, 3, 12, 12), (4,)]
    try:
        for b in range(3):
            data, label = layer.forward()
            assert data.dtype == label.dtype == __import__("torch").float32
            np.testing.assert_array_equal(data.numpy(), golden[f"batch{b}_data"])
            np.testing.assert_array_equal(label.numpy(), golden[f"batch{b}_label"])
    finally:
        layer.close()


def write_list(tmp_path, n=12, size=(6, 5), name="list.txt"):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        img[0, 0] = (i, 0, 0)  # pixel (0, 0) of channel B identifies the image
        cv2.imwrite(str(tmp_path / f"im{i}.png"), img)
        lines.append(f"im{i}.png {100 + i}")
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    return str(tmp_path / name)


def read_ids(layer, batches):
    out = []
    for _ in range(batches):
        data, label = layer.forward()
        ids = data[:, 0, 0, 0].round().int().tolist()
        assert [100 + i for i in ids] == label.int().tolist()
        out += ids
    return out


def test_epoch_wraps_inside_a_batch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path)
    layer = ImageData(image_data("list.txt", batch=5), [], TRAIN)
    assert read_ids(layer, 5) == (list(range(12)) * 3)[:25]


def test_shuffle_reshuffles_every_epoch_and_is_seeded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path)
    param = image_data("list.txt", batch=4, extra="shuffle: true")
    layer = ImageData(param, [], TRAIN)
    layer.set_seed(11)
    ids = read_ids(layer, 9)
    epochs = [ids[i:i + 12] for i in range(0, 36, 12)]
    assert all(sorted(e) == list(range(12)) for e in epochs)
    assert epochs[0] != epochs[1] and epochs[0] != list(range(12))
    again = ImageData(param, [], TRAIN)
    again.set_seed(11)
    assert read_ids(again, 9) == ids
    other = ImageData(param, [], TRAIN)
    other.set_seed(12)
    assert read_ids(other, 9) != ids


def test_rand_skip_starts_inside_the_first_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path)
    starts = set()
    for seed in range(30):
        layer = ImageData(image_data("list.txt", batch=3, extra="rand_skip: 5"), [], TRAIN)
        layer.set_seed(seed)
        ids = read_ids(layer, 5)
        start = ids[0]
        assert ids == [(start + k) % 12 for k in range(15)]
        starts.add(start)
    assert starts <= set(range(5)) and len(starts) > 2


def test_shards_read_alternate_items(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path)
    param = image_data("list.txt", batch=3)
    ranks = []
    for rank in range(2):
        layer = ImageData(param, [], TRAIN)
        layer.set_shard(rank, 2)
        ranks.append(read_ids(layer, 4))
    assert ranks[0] == [0, 2, 4, 6, 8, 10] * 2
    assert ranks[1] == [1, 3, 5, 7, 9, 11] * 2


def test_batches_do_not_depend_on_worker_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path, size=(9, 10))
    param = image_data("list.txt", batch=5, extra="shuffle: true",
                       transform="crop_size: 6 mirror: true mean_value: 100 scale: 0.5")
    results = []
    for workers in (0, 1, 2):
        layer = ImageData(param, [], TRAIN)
        layer.set_seed(3)
        layer.set_num_workers(workers)
        results.append([layer.forward()[0].numpy() for _ in range(4)])
        layer.close()
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_resize_and_gray(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path, size=(6, 5))
    layer = ImageData(image_data("list.txt", batch=2, extra="new_height: 8 new_width: 7 is_color: false"), [], TEST)
    assert layer.top_shapes([]) == [(2, 1, 8, 7), (2,)]
    data, _ = layer.forward()
    want = cv2.resize(cv2.imread("im0.png", cv2.IMREAD_GRAYSCALE), (7, 8), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(data[0, 0].numpy(), want.astype(np.float32))


# -- errors ----------------------------------------------------------------------------------

def test_missing_image_names_list_line_and_layer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path, n=3)
    (tmp_path / "list.txt").write_text("im0.png 0\nmissing.png 1\n")
    layer = ImageData(image_data("list.txt", batch=2), [], TRAIN)
    with pytest.raises(DataError) as info:
        layer.forward()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("list.txt:2: layer 'data' (ImageData): cannot read image 'missing.png'")


def test_missing_image_in_a_worker_is_the_same_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path, n=3)
    (tmp_path / "list.txt").write_text("im0.png 0\nim1.png 0\nbroken.png 1\n")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    layer = ImageData(image_data("list.txt", batch=3), [], TRAIN)
    layer.set_num_workers(1)
    with pytest.raises(DataError, match=r"^list\.txt:3: layer 'data' \(ImageData\): cannot read image 'broken\.png'.*not a readable image$"):
        layer.forward()
    layer.close()


@pytest.mark.parametrize("text, message", [
    ("", r"^list\.txt: layer 'data' \(ImageData\): image list is empty"),
    ("im0.png 0\nim1.png one\n", r"^list\.txt:2: layer 'data' \(ImageData\): label 'one' is not an integer"),
    ("im0.png\n", r"^list\.txt:1: layer 'data' \(ImageData\): expected 'path label'"),
])
def test_bad_lists(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path, n=2)
    (tmp_path / "list.txt").write_text(text)
    with pytest.raises(DataError, match=message):
        ImageData(image_data("list.txt"), [], TRAIN)


def test_missing_list_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^nope\.txt: layer 'data' \(ImageData\): cannot open image list 'nope\.txt'"):
        ImageData(image_data("nope.txt"), [], TRAIN)


def test_image_smaller_than_crop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path, n=2, size=(6, 5))
    layer = ImageData(image_data("list.txt", batch=1, transform="crop_size: 4"), [], TRAIN)
    layer.forward()
    # Caffe's InferBlobShape checks the first image at set-up (data_transformer.cpp CHECK_GE).
    with pytest.raises(DataError, match=r"^list\.txt:1: .*image 'im0\.png': image of 6x5 is smaller than crop_size 6"):
        ImageData(image_data("list.txt", batch=1, transform="crop_size: 6"), [], TRAIN)


def test_unequal_sizes_without_crop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path, n=1, size=(6, 5), name="a.txt")
    cv2.imwrite("big.png", np.zeros((7, 5, 3), np.uint8))
    (tmp_path / "list.txt").write_text("im0.png 0\nbig.png 1\n")
    with pytest.raises(DataError, match=r"image 'big\.png': gives a 3x7x5 blob but the batch started with 3x6x5"):
        ImageData(image_data("list.txt", batch=2), [], TRAIN).forward()


def test_new_height_without_new_width():
    with pytest.raises(LayerError, match="new_height and new_width must be set together"):
        ImageData(image_data("x.txt", extra="new_height: 4"), [], TRAIN)


# -- the book's mouth data -------------------------------------------------------------------

BOOK_TRAIN = "crop_size: 48 mirror: true mean_value: 104.008 mean_value: 116.669 mean_value: 122.675"
# mobilenet_train.prototxt: crop 96 from a short side in [96, 128] on the book's larger crops,
# scaled to these 60x60 images: crop 48 from a short side in [48, 60].
BOOK_MOBILENET = ("crop_size: 48 mirror: true min_side_min: 48 min_side_max: 60 "
                  "mean_value: 104.008 mean_value: 116.669 mean_value: 122.675")
BOOK_AUGMENT = BOOK_MOBILENET + " max_rotation_angle: 15 use_deformed_resize: true deformed_resize_th: 0.5"


@pytest.mark.parametrize("transform", [BOOK_TRAIN, BOOK_MOBILENET, BOOK_AUGMENT])
@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_mouth_data_with_the_books_settings(monkeypatch, transform, phase):
    monkeypatch.chdir(MOUTH)
    if phase == TEST:
        transform = transform.replace("mirror: true", "mirror: false").replace(
            "deformed_resize_th: 0.5", "deformed_resize_th: 0")
    layer = ImageData(image_data("val.txt" if phase == TEST else "train.txt", batch=16,
                                 extra="shuffle: true", transform=transform), [], phase)
    layer.set_seed(1)
    assert layer.top_shapes([]) == [(16, 3, 48, 48), (16,)]
    for _ in range(2):
        data, label = layer.forward()
        assert data.shape == (16, 3, 48, 48) and set(label.tolist()) <= {0.0, 1.0}
        assert bool(data.isfinite().all()) and float(data.abs().max()) <= 255


def test_mouth_test_phase_matches_the_formula(monkeypatch):
    monkeypatch.chdir(MOUTH)
    layer = ImageData(image_data("val.txt", batch=2, transform=BOOK_TRAIN.replace("mirror: true", "")), [], TEST)
    data, label = layer.forward()
    first = (MOUTH / "val.txt").read_text().splitlines()[0].rsplit(" ", 1)
    img = cv2.imread(first[0], cv2.IMREAD_COLOR)
    h0, w0 = (img.shape[0] - 48) // 2, (img.shape[1] - 48) // 2
    mean = np.array([104.008, 116.669, 122.675], np.float32)
    want = (img[h0:h0 + 48, w0:w0 + 48].astype(np.float32) - mean).transpose(2, 0, 1)
    np.testing.assert_array_equal(data[0].numpy(), want)
    assert label[0] == int(first[1])


def test_golden_run_through_the_net(golden_png):
    """The same batches when pycaffe's Net drives the layer (caffelike.Net, TRAIN phase)."""
    import caffelike

    _, golden = golden_png
    net = caffelike.Net("train_val.prototxt", caffelike.TRAIN)
    for b in range(3):
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, golden[f"batch{b}_data"])
        np.testing.assert_array_equal(net.blobs["label"].data, golden[f"batch{b}_label"])


def test_shuffled_shards_partition_each_epoch(tmp_path, monkeypatch):
    """With one seed on every rank (the documented contract), shuffled shares are disjoint."""
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path)
    param = image_data("list.txt", batch=3, extra="shuffle: true")
    shares = []
    for rank in range(2):
        layer = ImageData(param, [], TRAIN)
        layer.set_seed(5)
        layer.set_shard(rank, 2)
        shares.append(read_ids(layer, 2))
    assert sorted(shares[0] + shares[1]) == list(range(12))


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_the_books_own_train_prototxt_layer(monkeypatch, phase):
    """The data layers of the book's simpleconv3/train.prototxt (corpus), pointed at the bundled lists."""
    corpus = TESTS / "data" / "corpus" / "longpeng2008__yousan.ai" / "simpleconv3" / "train.prototxt"
    net = text_format.Parse(corpus.read_text(), caffe_pb2.NetParameter())
    (lp,) = [lp for lp in net.layer if lp.type == "ImageData" and lp.include[0].phase == phase]
    lp.image_data_param.source = "train.txt" if phase == TRAIN else "val.txt"
    lp.image_data_param.ClearField("root_folder")
    monkeypatch.chdir(MOUTH)
    layer = ImageData(lp, [], phase)
    batch = lp.image_data_param.batch_size
    assert layer.top_shapes([]) == [(batch, 3, 48, 48), (batch,)]
    data, label = layer.forward()
    assert data.shape == (batch, 3, 48, 48) and set(label.tolist()) <= {0.0, 1.0}
