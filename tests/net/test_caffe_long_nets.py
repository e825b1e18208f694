"""The two book nets that real Caffe_Long ran (TEST phase), through the pycaffe API.

Golden data: tests/golden/caffe_long/nets (copied from shared/golden/caffe_long/nets; Caffe_Long
commit ecdb08d, CPU, float32; see its README.md). ``mobilenet10_depthwise`` is the book's
MobileNet-10 with DepthwiseConvolution and ships its weights; ``ft_last_layer_compact_bilinear`` is
the fine-grained chapter's VGG16 + CompactBilinear + SignedSqrt + L2Normalize, whose 65 MB of
weights are regenerated here from ``weight_recipe`` in case.json (numpy only, never caffelike's
fillers) and checked against the golden ``param_checks`` first. The input batches are regenerated
from ``input_recipe`` and checked against the sha256 of the shared file's array.

Tolerances (the fork README's "Tolerances"): rtol 1e-4 / atol 1e-5 of the array's scale; in the
bilinear net, ``bilinear`` and ``bilinear_sqrt`` at 1e-4 of their max |value| and the layers after
them (``bilinear_l2``, ``fc8_cub``, the loss) at rtol 1e-3, atol 1e-5.
"""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

import caffelike as caffe

from .conftest import GOLDEN

NETS = GOLDEN / "caffe_long" / "nets"
CASES = ("mobilenet10_depthwise", "ft_last_layer_compact_bilinear")
BN_FACTOR = 999.982  # the recipe's stored BatchNorm scale factor
# blobs after the 5e12-sized compact bilinear vector: only as good as that vector (README)
AFTER_BILINEAR = re.compile(r"^(bilinear_l2|fc8_cub.*|loss|accuracy)$")
MAX_RELATIVE = {"bilinear", "bilinear_sqrt"}


def _input_sha256() -> dict[str, str]:
    """The sha256 of each dropped ``in/data`` array, from the copy's README table."""
    text = (NETS / "README.md").read_text()
    return dict(re.findall(r"^\| `(\w+)` \| \([\d, ]+\) \| `([0-9a-f]{64})` \|$", text, re.M))


def _inputs(meta: dict) -> dict[str, np.ndarray]:
    """``input_recipe`` of case.json, written out: integer pixels minus the TEST mean, random labels."""
    recipe = meta["input_recipe"]
    seed = int(re.search(r"RandomState\((\d+)\)", recipe).group(1))
    shape = [int(v) for v in re.search(r"randint\(0, 256, size=\[([\d, ]+)\]\)", recipe).group(1).split(",")]
    mean = [float(v) for v in re.search(r"per channel \[([\d., ]+)\]", recipe).group(1).split(",")]
    classes = int(re.search(r"label = rs\.randint\(0, (\d+),", recipe).group(1))
    rs = np.random.RandomState(seed)
    pixels = rs.randint(0, 256, size=shape)
    data = (pixels - np.array(mean).reshape(1, -1, 1, 1)).astype(np.float32)
    label = rs.randint(0, classes, size=(shape[0], 1, 1, 1)).astype(np.float32)
    assert [data.shape, label.shape] == [tuple(meta["inputs"]["data"]), tuple(meta["inputs"]["label"])]
    return {"data": data, "label": label}


def _recipe_blob(kind: str, index: int, shape: list[int], seed: int) -> np.ndarray:
    """One parameter blob of ``weight_recipe`` (float64 maths, one cast to float32)."""
    rs = np.random.RandomState(seed)
    if kind in ("Convolution", "DepthwiseConvolution", "InnerProduct"):
        a = (rs.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:])) if index == 0
             else rs.standard_normal(shape) * 0.1)
    elif kind == "BatchNorm":
        a = (rs.standard_normal(shape) * 0.2 * BN_FACTOR if index == 0
             else rs.uniform(0.5, 2.0, shape) * BN_FACTOR if index == 1 else np.full(shape, BN_FACTOR))
    elif kind == "Scale":
        a = rs.uniform(0.5, 1.5, shape) if index == 0 else rs.standard_normal(shape) * 0.1
    else:
        raise AssertionError(f"weight_recipe has no rule for {kind}")
    return np.asarray(a, np.float64).astype(np.float32)


def _recipe_weights(meta: dict) -> dict[str, list[np.ndarray]]:
    """Every blob of the recipe, checked against the golden param_checks (sum, first four values)."""
    weights: dict[str, list[np.ndarray]] = {}
    for k, check in enumerate(meta["param_checks"]):
        assert check["k"] == k
        a = _recipe_blob(check["type"], check["blob"], check["shape"], meta["weight_base_seed"] + k)
        np.testing.assert_array_equal(a.ravel()[:4], np.array(check["first4"], np.float32), err_msg=check["layer"])
        assert a.astype(np.float64).sum() == pytest.approx(check["sum"], rel=1e-9, abs=1e-9), check["layer"]
        weights.setdefault(check["layer"], []).append(a)
        assert len(weights[check["layer"]]) == check["blob"] + 1
    return weights


def _run(case: str):
    """Build the TEST net, load the case's weights, regenerate the inputs and run one forward."""
    folder = NETS / case
    meta = json.loads((folder / "case.json").read_text())
    golden = np.load(folder / "data.npz")
    inputs = _inputs(meta)
    sha = hashlib.sha256(inputs["data"].astype("<f4").tobytes()).hexdigest()
    assert sha == _input_sha256()[case], "input_recipe no longer reproduces the shared in/data"
    np.testing.assert_array_equal(inputs["label"], golden["in/label"])
    if meta["weights_caffemodel"]:
        net = caffe.Net(str(folder / "net.prototxt"), str(folder / meta["weights_caffemodel"]), caffe.TEST)
    else:
        net = caffe.Net(str(folder / "net.prototxt"), caffe.TEST)
        weights = _recipe_weights(meta)
        assert list(net.params) == list(weights)
        for layer, arrays in weights.items():
            for blob, a in zip(net.params[layer], arrays):
                assert blob.data.shape == a.shape, layer
                blob.data[...] = a
    out = net.forward(**inputs)
    return net, meta, golden, out


def _tolerance(case: str, blob: str, expected: np.ndarray) -> tuple[float, float]:
    """(rtol, atol) of the README for this blob."""
    finite = np.abs(expected[np.isfinite(expected)])
    peak = float(finite.max()) if finite.size else 0.0
    if case == "ft_last_layer_compact_bilinear" and blob in MAX_RELATIVE:
        return 0.0, 1e-4 * (peak or 1.0)
    if case == "ft_last_layer_compact_bilinear" and AFTER_BILINEAR.match(blob):
        return 1e-3, 1e-5
    return 1e-4, 1e-5 * max(1.0, peak)


def _assert_blob(case: str, name: str, actual: np.ndarray, expected: np.ndarray) -> None:
    rtol, atol = _tolerance(case, name, expected)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected.astype(np.float64),
                               rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{case}: blob {name}")


def _assert_summary(case: str, name: str, actual: np.ndarray, summary: dict) -> None:
    """blobs.json's statistics of a blob too large to ship in full, at the blob's tolerance."""
    assert list(actual.shape) == summary["shape"], f"{case}: {name} shape"
    flat = actual.ravel()  # float32, statistics accumulated in float64 (blobs of up to 205 MB)
    scale_ref = np.array([summary["min"], summary["max"]])
    rtol, atol = _tolerance(case, name, scale_ref)
    first = np.array(summary["first32"])
    np.testing.assert_allclose(flat[:len(first)], first, rtol=rtol, atol=atol, err_msg=f"{case}: {name} first32")
    stats = {"mean": flat.mean(dtype=np.float64), "std": flat.std(dtype=np.float64), "min": flat.min(),
             "max": flat.max(), "abs_mean": np.abs(flat).mean(dtype=np.float64)}
    for stat, value in stats.items():
        assert abs(value - summary[stat]) <= atol + rtol * abs(summary[stat]), \
            f"{case}: {name} {stat} {value} vs {summary[stat]}"


@pytest.fixture(scope="module")
def runs():
    """One forward per case for this module's tests, freed with the module (VGG16 at 448 x 448
    holds about 1.5 GB of blobs)."""
    done: dict[str, tuple] = {}

    def run(case: str):
        if case not in done:
            done[case] = _run(case)
        return done[case]

    yield run
    done.clear()


@pytest.mark.parametrize("case", CASES)
def test_blob_and_param_shapes_match_caffe_long(case: str, runs) -> None:
    net, _, golden, _ = runs(case)
    shapes = {k[len("shape/"):]: tuple(int(v) for v in golden[k]) for k in golden.files if k.startswith("shape/")}
    ours = {name: blob.data.shape for name, blob in net.blobs.items()}
    for name, shape in shapes.items():
        if name not in ours:  # a Split top caffelike does not list
            assert "_split_" in name, name
            continue
        assert ours[name] == shape, name
    assert set(ours) <= set(shapes)
    params = {}
    for k in golden.files:
        if k.startswith("paramshape/"):
            layer, index = k[len("paramshape/"):].rsplit("/", 1)
            params.setdefault(layer, {})[int(index)] = tuple(int(v) for v in golden[k])
    assert list(net.params) == list(params)
    for layer, blobs in params.items():
        assert [b.data.shape for b in net.params[layer]] == [blobs[i] for i in range(len(blobs))], layer


@pytest.mark.parametrize("case", CASES)
def test_outputs_match_caffe_long(case: str, runs) -> None:
    net, meta, golden, out = runs(case)
    assert sorted(out) == sorted(meta["outputs"])
    for name in meta["outputs"]:
        _assert_blob(case, name, out[name], golden[f"out/{name}"])


@pytest.mark.parametrize("case", CASES)
def test_every_blob_matches_caffe_long(case: str, runs) -> None:
    """Blobs shipped in full compare element by element; the others by blobs.json's statistics."""
    net, _, golden, _ = runs(case)
    summaries = json.loads((NETS / case / "blobs.json").read_text())
    full = {k[len("blob/"):] for k in golden.files if k.startswith("blob/")}
    checked = 0
    for name, summary in summaries.items():
        if name not in net.blobs:
            assert "_split_" in name, name
            continue
        actual = net.blobs[name].data
        if name in full:
            _assert_blob(case, name, actual, golden[f"blob/{name}"])
        else:
            _assert_summary(case, name, actual, summary)
        checked += 1
    assert checked == len(net.blobs)
