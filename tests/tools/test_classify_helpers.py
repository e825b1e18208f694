"""classify's list reading, preprocessing and confusion matrix (formulas: the book's inference flow)."""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from caffelike.errors import DataError
from caffelike.inference import Preprocess, confusion_matrix, format_confusion
from caffelike.io.image_list import ListEntry, read_image_list

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_read_image_list_with_optional_labels(tmp_path: pathlib.Path) -> None:
    lst = tmp_path / "l.txt"
    lst.write_text("a.jpg 1\n\nsub dir/b.png 0\nc.jpg\n")
    assert read_image_list(str(lst), labels_required=False) == [
        ListEntry("a.jpg", 1, 1), ListEntry("sub dir/b.png", 0, 3), ListEntry("c.jpg", None, 4)]
    with pytest.raises(DataError, match=r"l.txt:4: expected 'path label', got 'c.jpg'"):
        read_image_list(str(lst))
    lst.write_text("a.jpg one\n")
    with pytest.raises(DataError, match=r"l.txt:1: label 'one' is not an integer \(expected 'path label'\)"):
        read_image_list(str(lst), labels_required=False)


def test_preprocess_is_the_books_flow() -> None:
    path = str(ROOT / "data" / "mouth" / "0" / "446neutral.jpg")
    mean = np.array([104.008, 116.669, 122.675], np.float32)
    out = Preprocess(48, 48, mean=mean).load(path)
    img = cv2.resize(cv2.imread(path), (48, 48), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    np.testing.assert_allclose(out, img.transpose(2, 0, 1) - mean[:, None, None], atol=1e-4)
    with pytest.raises(DataError):
        Preprocess(48, 48).load(str(ROOT / "nope.jpg"))


def test_confusion_matrix_text() -> None:
    cm = confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 2)
    assert cm.tolist() == [[1, 1], [1, 2]]
    text = format_confusion(cm, ["neutral", "smile"]).splitlines()
    assert text[0].split() == ["true\\pred", "neutral", "smile"]
    assert text[2].split() == ["smile", "1", "2"]
