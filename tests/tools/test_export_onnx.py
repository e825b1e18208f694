"""``caffelike export``: onnxruntime runs the exported net to real Caffe's outputs.

Expected values: tests/golden/nets/<case>/data.npz (real BVLC Caffe's forward on these nets).
"""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from caffelike.cli import main as cli_main

ROOT = pathlib.Path(__file__).resolve().parents[2]
NETS = ROOT / "tests" / "golden" / "nets"


@pytest.mark.parametrize("case", ["simpleconv3", "lenet"])
def test_onnxruntime_matches_caffe(case: str, tmp_path: pathlib.Path) -> None:
    out = tmp_path / f"{case}.onnx"
    rc = cli_main(["export", "-model", str(NETS / case / "net.prototxt"),
                   "-weights", str(NETS / case / "weights.caffemodel"), "-o", str(out)])
    assert rc == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    data = np.load(NETS / case / "data.npz")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["data"]
    assert [o.name for o in sess.get_outputs()] == ["prob"]
    (prob,) = sess.run(None, {"data": data["input__data"]})
    expect = data["output__prob"]
    np.testing.assert_allclose(prob, expect, rtol=1e-4, atol=1e-5 * float(np.abs(expect).max()))


def test_dynamic_batch_and_check_flag(tmp_path: pathlib.Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    model = ROOT / "models" / "mouth" / "simpleconv3" / "deploy.prototxt"  # Input batch 1
    weights = ROOT / "tests" / "data" / "corpus" / "longpeng2008__yousan.ai" / "simpleconv3" / "test_models" / \
        "simpleconv3__iter_10000.caffemodel"
    assert cli_main(["export", "-model", str(model), "-weights", str(weights), "-o", str(out), "--check"]) == 0
    assert "max relative difference" in capsys.readouterr().out
    data = np.load(NETS / "simpleconv3" / "data.npz")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (prob,) = sess.run(None, {"data": data["input__data"][:5]})
    np.testing.assert_allclose(prob, data["output__prob"][:5], rtol=1e-4, atol=1e-5)


def test_missing_weights_is_a_one_line_error(tmp_path: pathlib.Path, capsys) -> None:
    rc = cli_main(["export", "-model", str(NETS / "lenet" / "net.prototxt"), "-weights",
                   str(tmp_path / "none.caffemodel"), "-o", str(tmp_path / "x.onnx")])
    assert rc == 1
    assert "none.caffemodel" in capsys.readouterr().err
