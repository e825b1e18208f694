"""Scaffolding for the net tests: golden paths, and stand-ins for caffelike.io while it is being written.

The stand-ins are used only when ``caffelike.io`` lacks a function (they parse V2 text
prototxts and current-format binary caffemodels, nothing legacy); tests that need the real
upgrade path skip without it.
"""
from __future__ import annotations

import importlib
import json
import pathlib

import numpy as np
import pytest
from google.protobuf import text_format

import caffelike.io as cio
from caffelike.errors import Where
from caffelike.proto import caffe_pb2

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden"


def io_has(name: str) -> bool:
    """Whether the real caffelike.io provides ``name``."""
    try:
        getattr(cio, name)
        if name in ("read_net", "parse_net", "read_caffemodel"):
            importlib.import_module("caffelike.io.upgrade")
        return True
    except (AttributeError, ImportError):
        return False


class _FallbackSourceMap:
    def __init__(self, file: str, lines: dict[str, int]):
        self.file, self.lines = file, lines

    def where(self, lp):
        return Where(file=self.file, line=self.lines.get(lp.name), layer=lp.name, type=lp.type)


def _fallback_parse_net(text, filename="<string>", allow_unknown_fields=False):
    net = caffe_pb2.NetParameter()
    text_format.Parse(text, net)
    lines, current = {}, None
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("layer {") or s == "layer{" or s == "layer":
            current = no
        elif s.startswith("name:") and current is not None:
            lines.setdefault(s.split(":", 1)[1].strip().strip('"'), current)
            current = None
    return net, _FallbackSourceMap(filename, lines)


def _fallback_read_net(path, allow_unknown_fields=False):
    return _fallback_parse_net(pathlib.Path(path).read_text(), str(path), allow_unknown_fields)


def _fallback_blob_to_array(blob):
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") or blob.HasField("width"):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    return np.asarray(blob.data, dtype=np.float32).reshape(shape)


def _fallback_array_to_blob(array, diff=None):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(array.shape)
    blob.data.extend(np.asarray(array, np.float32).ravel().tolist())
    if diff is not None:
        blob.diff.extend(np.asarray(diff, np.float32).ravel().tolist())
    return blob


def _fallback_read_caffemodel(path):
    net = caffe_pb2.NetParameter()
    net.ParseFromString(pathlib.Path(path).read_bytes())
    if not net.layer and net.layers:
        pytest.skip("V1 caffemodel needs caffelike.io's upgrade (not available yet)")
    return net


def _fallback_write_caffemodel(net_param, path):
    pathlib.Path(path).write_bytes(net_param.SerializeToString())


_FALLBACKS = {
    "read_net": _fallback_read_net, "parse_net": _fallback_parse_net,
    "blob_to_array": _fallback_blob_to_array, "array_to_blob": _fallback_array_to_blob,
    "read_caffemodel": _fallback_read_caffemodel, "write_caffemodel": _fallback_write_caffemodel,
}


@pytest.fixture(autouse=True)
def _io_fallbacks(monkeypatch):
    for name, fn in _FALLBACKS.items():
        if not io_has(name):
            monkeypatch.setitem(vars(cio), name, fn)
    yield


def parse_net_text(text: str, filename: str = "test.prototxt"):
    """(NetParameter, SourceMap) through caffelike.io (or the stand-in)."""
    parse = cio.parse_net if io_has("parse_net") else _fallback_parse_net
    return parse(text, filename)


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
