"""classify's preprocessing and confusion matrix (formulas: the book's inference flow)."""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from caffelike.errors import DataError
from caffelike.inference import Preprocess, confusion_matrix, format_confusion

ROOT = pathlib.Path(__file__).resolve().parents[2]


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
