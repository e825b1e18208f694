"""MobileNet-SSD (chuanqi305/MobileNet-SSD, SSD fork weiliu89/caffe ssd), issue 16.

The corpus deploy net runs end to end on generated (seeded) weights, written as a caffemodel by
caffelike, and its ``detection_out`` equals OpenCV dnn's on the same prototxt, weights and
image (a mouth crop from ../shared/data/mouth, copied to tests/data/mouth). The train/test nets
build as far as the fork's layers caffelike has.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import caffelike
from caffelike.errors import DataError

cv2 = pytest.importorskip("cv2")

TESTS = pathlib.Path(__file__).resolve().parents[1]
VOC = TESTS / "data" / "corpus" / "chuanqi305__MobileNet-SSD" / "voc"
IMAGE = TESTS / "data" / "mouth" / "109smile.jpg"
PRIORS = 1917  # 19x19x3 + 10x10x6 + 5x5x6 + 3x3x6 + 2x2x6 + 1x1x6


@pytest.fixture(scope="module")
def ssd(tmp_path_factory: pytest.TempPathFactory):
    """(deploy copy with confidence_threshold 0.1, its caffemodel, the input, our net after one forward)."""
    tmp = tmp_path_factory.mktemp("mobilenet_ssd")
    text = (VOC / "MobileNetSSD_deploy.prototxt").read_text()
    assert "confidence_threshold: 0.25" in text
    deploy = tmp / "deploy.prototxt"
    deploy.write_text(text.replace("confidence_threshold: 0.25", "confidence_threshold: 0.1"))
    net = caffelike.Net(str(deploy), caffelike.TEST)
    rng = np.random.default_rng(0)
    for blobs in net.params.values():
        for blob in blobs:  # He-normal weights, small random biases
            shape = blob.data.shape
            scale = np.sqrt(2.0 / max(1, int(np.prod(shape[1:])))) if len(shape) > 1 else 0.1
            blob.data[...] = rng.normal(scale=scale, size=shape)
    weights = tmp / "weights.caffemodel"
    net.save(str(weights))
    image = cv2.resize(cv2.imread(str(IMAGE)), (300, 300)).astype(np.float32)
    x = ((image - 127.5) * np.float32(0.007843)).transpose(2, 0, 1)[None]
    net.forward(data=x)
    return deploy, weights, x, net


def _opencv(deploy: pathlib.Path, weights: pathlib.Path, x: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """OpenCV's outputs, computed on one thread: OpenCV's thread pool, once running, deadlocks
    the data layers' forked prefetch workers of later tests when they call OpenCV."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(0)
    try:
        cv_net = cv2.dnn.readNetFromCaffe(str(deploy), str(weights))
        cv_net.setInput(x)
        return list(cv_net.forward(names))
    finally:
        cv2.setNumThreads(threads)


def test_deploy_heads_match_opencv(ssd) -> None:
    deploy, weights, x, net = ssd
    names = ["mbox_priorbox", "mbox_loc", "mbox_conf_flatten"]
    shapes = {"mbox_priorbox": (1, 2, PRIORS * 4), "mbox_loc": (1, PRIORS * 4), "mbox_conf_flatten": (1, PRIORS * 21)}
    for name, theirs in zip(names, _opencv(deploy, weights, x, names)):
        ours = np.array(net.blobs[name].data)
        assert ours.shape == shapes[name] == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5, err_msg=name)


def test_deploy_detections_match_opencv(ssd) -> None:
    """The same detections as OpenCV. The fork writes them by label, best score first within a
    label (detection_output_layer.cpp); OpenCV sorts them by score and pads to keep_top_k (100)
    rows of zeros: OpenCV's rows are put in the fork's order for the comparison."""
    deploy, weights, x, net = ssd
    ours = np.array(net.blobs["detection_out"].data)
    assert ours.shape[:2] == (1, 1) and ours.shape[3] == 7
    rows = ours[0, 0]
    assert 10 <= len(rows) <= 100 and (rows[:, 2] > 0.1).all()
    np.testing.assert_array_equal(rows, rows[np.lexsort((-rows[:, 2], rows[:, 1]))])
    (theirs,) = _opencv(deploy, weights, x, ["detection_out"])
    cv_rows = theirs[0, 0][theirs[0, 0, :, 2] > 0]
    assert len(cv_rows) == len(rows)
    np.testing.assert_allclose(rows, cv_rows[np.lexsort((-cv_rows[:, 2], cv_rows[:, 1]))], rtol=0, atol=1e-5)


def test_deploy_threshold_without_detections_gives_the_forks_empty_row(ssd) -> None:
    """The corpus threshold (0.25) keeps nothing on these weights: the fork's top is one row
    [image, -1, ...]; OpenCV's is keep_top_k rows of zeros (the source wins)."""
    _, _, x, net = ssd
    assert float(np.array(net.blobs["mbox_conf_flatten"].data).reshape(-1, 21)[:, 1:].max()) < 0.25
    original = caffelike.Net(str(VOC / "MobileNetSSD_deploy.prototxt"), caffelike.TEST)
    for name, blobs in net.params.items():
        for mine, theirs in zip(original.params[name], blobs):
            mine.data[...] = theirs.data
    out = np.array(original.forward(data=x)["detection_out"])
    np.testing.assert_array_equal(out, [[[[0, -1, -1, -1, -1, -1, -1]]]])


@pytest.mark.parametrize("name,phase,source", [("MobileNetSSD_train.prototxt", caffelike.TRAIN, "trainval_lmdb/"),
                                               ("MobileNetSSD_test.prototxt", caffelike.TEST, "test_lmdb")])
def test_train_and_test_nets_stop_at_the_missing_lmdb(tmp_path, monkeypatch, name: str, phase: int, source: str) -> None:
    """Every fork type of the train/test nets (AnnotatedData, MultiBoxLoss, DetectionEvaluate,
    ...) is known: they fail where Caffe would, on the LMDB the first layer opens (as Data)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        caffelike.Net(str(VOC / name), phase)
    assert "layer 'data' (AnnotatedData)" in str(info.value) and f"cannot open LMDB '{source}'" in str(info.value)
