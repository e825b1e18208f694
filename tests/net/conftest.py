"""Shared helpers of the net tests: golden paths, JSON loading and the golden tolerance."""
from __future__ import annotations

import json
import pathlib

import numpy as np

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden"


def load_json(path: pathlib.Path):
    return json.loads(path.read_text())


def assert_close_scaled(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """The golden tolerance: rtol 1e-4, atol 1e-5 relative to the array's scale."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale, equal_nan=True, err_msg=what)
