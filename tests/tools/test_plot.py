"""``caffelike plot``: PNG/SVG of the requested size from real Caffe logs (the book's and golden)."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from caffelike.cli import main as cli_main
from caffelike.logs.plot import CHART_TYPES, smooth

TESTS = pathlib.Path(__file__).resolve().parents[1]
BOOK_LOG = TESTS / "data" / "corpus" / "longpeng2008__yousan.ai" / "simpleconv3" / "scripts" / "log.txt"
SGD_LOG = TESTS / "golden" / "logs" / "sgd_step" / "sgd_step.log"


def _png(path: pathlib.Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(str(path))


def test_book_log_png_of_requested_size(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "curves.png"
    assert cli_main(["plot", str(BOOK_LOG), "-o", str(out), "--size", "900x300", "--smooth", "5"]) == 0
    img = _png(out)
    assert img.shape[:2] == (300, 900)
    # not blank: many distinct colours, and curves (non-white pixels) in every third
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 50
    ink = (img[..., :3].mean(axis=2) < 0.9)
    for third in np.array_split(ink, 3, axis=1):
        assert third.mean() > 0.01


def test_overlay_two_logs_svg(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "both.svg"
    assert cli_main(["plot", str(BOOK_LOG), str(SGD_LOG), "-o", str(out), "--x", "seconds"]) == 0
    text = out.read_text()
    assert text.startswith("<?xml") and "<svg" in text
    assert "log.txt" in text and "sgd_step.log" in text  # legend entries (matplotlib keeps text as glyph ids + comments)


@pytest.mark.parametrize("chart", sorted(CHART_TYPES))
def test_caffe_chart_types(chart: int, tmp_path: pathlib.Path) -> None:
    out = tmp_path / f"chart{chart}.png"
    assert cli_main(["plot", str(SGD_LOG), "-o", str(out), "--chart-type", str(chart), "--size", "320x240"]) == 0
    assert _png(out).shape[:2] == (240, 320)


def test_legacy_plot_training_log_wrapper(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "legacy.png"
    script = TESTS.parent / "tools" / "plot_training_log.py"
    res = subprocess.run([sys.executable, str(script), "6", str(out), str(SGD_LOG)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size > 1000


def test_smooth_is_a_trailing_mean() -> None:
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert smooth([1.0, 2.0], 1) == [1.0, 2.0]


def test_bad_size_is_a_one_line_error(tmp_path: pathlib.Path, capsys) -> None:
    assert cli_main(["plot", str(SGD_LOG), "-o", str(tmp_path / "x.png"), "--size", "big"]) == 1
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_against_learning_rate_and_extra_panels(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "lr.png"
    log = TESTS / "golden" / "logs" / "multistep_itersize2" / "multistep_itersize2.log"
    assert cli_main(["plot", str(log), "-o", str(out), "--x", "lr", "--panels", "train_loss,train_lr",
                     "--size", "600x300", "--title", "multistep"]) == 0
    assert _png(out).shape[:2] == (300, 600)
