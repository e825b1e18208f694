"""Run one single-layer golden case from real Caffe (``tests/golden/layers/<Type>__<variant>``).

The layer is built on its own, without the net builder: the case's ``net.prototxt`` is parsed,
the layer named ``case.json["layer_name"]`` is constructed from the layer registry with the
recorded bottom shapes and phase, its blobs are loaded from ``data.npz`` (``param/<i>``), and
then forward, backward (``torch.autograd.backward`` with ``topdiff/*``) and the blobs after the
forward (``param_after/*``, BatchNorm in TRAIN) are compared with what Caffe recorded.

Typical use from a test module next to this one::

    from .golden_case import cases_for, run_case

    @pytest.mark.parametrize("case", cases_for("Pooling", "SPP"))
    def test_golden(case):
        run_case(case)

Tolerances are those of tests/golden/README.md: ``rtol=1e-4`` and ``atol=1e-5`` times the
array's scale (``max(1, max|expected|)``), NaN equal to NaN; exact for data-movement and
selection layers (see :data:`EXACT_FORWARD`, :data:`EXACT_BACKWARD`).
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from google.protobuf import text_format

from caffelike.errors import Where
from caffelike.layers import LAYERS, TEST, TRAIN
from caffelike.proto import caffe_pb2

GOLDEN_LAYERS = pathlib.Path(__file__).resolve().parent.parent / "golden" / "layers"

RTOL = 1e-4
ATOL = 1e-5

# Layer types whose tops real Caffe computes bit-exactly (float32 == float64 run), plus the
# selection layers the golden README asks to match exactly.  MAX pooling is handled per case.
EXACT_FORWARD = frozenset({
    "AbsVal", "Accuracy", "ArgMax", "BatchReindex", "Clip", "Concat", "Crop", "Dropout",
    "DummyData", "Embed", "Filter", "Flatten", "Parameter", "ReLU", "Reshape", "Silence",
    "Slice", "Split", "Threshold", "Tile",
})
# Layer types whose bottom/param diffs are pure data movement (no sums): exact as well.
EXACT_BACKWARD = frozenset({
    "AbsVal", "Clip", "Concat", "Crop", "Dropout", "Filter", "Flatten", "Parameter",
    "Reshape", "Silence", "Slice", "Threshold",
})

_PHASES = {"TRAIN": TRAIN, "TEST": TEST}


@dataclass
class GoldenCase:
    """Everything recorded for one case folder."""

    name: str
    path: pathlib.Path
    meta: dict[str, Any]
    net: caffe_pb2.NetParameter
    layer_param: caffe_pb2.LayerParameter
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def type(self) -> str:
        return self.meta["type"]

    @property
    def phase(self) -> int:
        return _PHASES[self.meta["phase"]]

    @property
    def bottom_names(self) -> list[str]:
        return list(self.layer_param.bottom)

    @property
    def top_names(self) -> list[str]:
        return list(self.layer_param.top)

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays under ``prefix/`` (e.g. ``"out"``), keyed by the rest of their name."""
        p = prefix + "/"
        return {k[len(p):]: v for k, v in self.arrays.items() if k.startswith(p)}


def case_names(type_name: str | None = None) -> list[str]:
    """Names of all case folders (``<Type>__<variant>``), optionally of one layer type."""
    names = sorted(p.name for p in GOLDEN_LAYERS.iterdir() if (p / "case.json").is_file())
    if type_name is not None:
        names = [n for n in names if n.split("__", 1)[0] == type_name]
    return names


def cases_for(*type_names: str) -> list[str]:
    """Case names for the given Caffe layer types (for ``pytest.mark.parametrize``)."""
    out: list[str] = []
    for t in type_names:
        found = case_names(t)
        if not found:
            raise LookupError(f"no golden case for layer type {t!r} under {GOLDEN_LAYERS}")
        out.extend(found)
    return out


def load_case(case: str | pathlib.Path) -> GoldenCase:
    """Read case.json, net.prototxt and data.npz of a case (name or folder path)."""
    path = pathlib.Path(case)
    if not path.is_dir():
        path = GOLDEN_LAYERS / str(case)
    meta = json.loads((path / "case.json").read_text())
    net = caffe_pb2.NetParameter()
    prototxt = path / "net.prototxt"
    if prototxt.is_file():
        text_format.Parse(prototxt.read_text(), net)
    layer_name = meta.get("layer_name")
    matches = [lp for lp in net.layer if lp.name == layer_name]
    if len(matches) != 1:
        raise LookupError(f"{prototxt}: expected one layer named {layer_name!r}, found {len(matches)}")
    npz = path / "data.npz"
    arrays: dict[str, np.ndarray] = {}
    if npz.is_file():
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files}
    return GoldenCase(path.name, path, meta, net, matches[0], arrays)


def build_layer(case: GoldenCase) -> torch.nn.Module:
    """Construct the layer under test from the registry and load ``param/<i>`` into its blobs."""
    info = LAYERS.get(case.layer_param.type)
    shapes = [tuple(case.meta["bottoms"][b]) for b in case.bottom_names]
    where = Where(file=str(case.path / "net.prototxt"), layer=case.layer_param.name,
                  type=case.layer_param.type)
    layer = info.cls(case.layer_param, shapes, case.phase, where)
    params = case.group("param")
    if len(params) != len(layer.blobs):
        raise AssertionError(f"{case.name}: layer has {len(layer.blobs)} blobs, "
                             f"Caffe recorded {len(params)}")
    with torch.no_grad():
        for i, blob in enumerate(layer.blobs):
            want = params[str(i)]
            if tuple(blob.shape) != want.shape:
                raise AssertionError(f"{case.name}: blob {i} shape {tuple(blob.shape)}, "
                                     f"Caffe's is {want.shape}")
            blob.copy_(torch.from_numpy(want))
    return layer


def assert_close(actual: torch.Tensor | np.ndarray, expected: np.ndarray, what: str,
                 exact: bool = False) -> None:
    """Compare with the golden tolerance (scale-relative atol), or bit-exactly."""
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().cpu().numpy()
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != Caffe's {expected.shape}"
    if exact:
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * scale,
                               equal_nan=True, err_msg=what)


def _exact_forward(case: GoldenCase) -> bool:
    if case.type in EXACT_FORWARD:
        return True
    lp = case.layer_param
    return case.type == "Pooling" and lp.pooling_param.pool == caffe_pb2.PoolingParameter.MAX


def run_case(case: str | pathlib.Path | GoldenCase, *, exact_forward: bool | None = None,
             exact_backward: bool | None = None, check_backward: bool = True) -> GoldenCase:
    """Build, run forward and backward, and assert every recorded array matches.

    ``exact_*`` override the per-type defaults; ``check_backward=False`` checks only the
    forward pass (say why in the calling test).
    """
    if not isinstance(case, GoldenCase):
        case = load_case(case)
    if exact_forward is None:
        exact_forward = _exact_forward(case)
    if exact_backward is None:
        exact_backward = case.type in EXACT_BACKWARD
    torch.manual_seed(1701)

    layer = build_layer(case)
    inputs = case.group("in")
    wants_grad = set(case.meta.get("backward_bottoms") or [])
    bottoms: list[torch.Tensor] = []
    for name in case.bottom_names:
        t = torch.from_numpy(inputs[name].copy())
        if check_backward and name in wants_grad:
            t.requires_grad_(True)
        bottoms.append(t)

    tops = layer(*bottoms)
    assert isinstance(tops, (list, tuple)), f"{case.name}: forward must return a list of tops"
    outs = case.group("out")
    assert len(tops) == len(case.top_names), (f"{case.name}: {len(tops)} tops, "
                                              f"prototxt names {len(case.top_names)}")
    for name, top in zip(case.top_names, tops):
        assert top.dtype == torch.float32, f"{case.name}: top {name} is {top.dtype}, not float32"
        assert_close(top, outs[name], f"{case.name}: out/{name}", exact=exact_forward)

    for name, b in zip(case.bottom_names, bottoms):  # a layer must not write into its bottoms
        np.testing.assert_array_equal(b.detach().numpy(), inputs[name],
                                      err_msg=f"{case.name}: bottom {name} changed by forward")

    for i, want in sorted(case.group("param_after").items()):
        assert_close(layer.blobs[int(i)], want, f"{case.name}: param_after/{i}")

    if not (check_backward and case.meta.get("backward")):
        return case
    _run_backward(case, layer, bottoms, tops, exact_backward)
    return case


def _run_backward(case: GoldenCase, layer: torch.nn.Module, bottoms: Sequence[torch.Tensor],
                  tops: Sequence[torch.Tensor], exact: bool) -> None:
    topdiff = case.group("topdiff")
    skip = set(case.meta.get("zero_topdiff") or [])
    for blob in layer.blobs:
        blob.grad = None
    outs: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    for name, top in zip(case.top_names, tops):
        if name in skip or not top.requires_grad:
            continue
        outs.append(top)
        grads.append(torch.from_numpy(topdiff[name].copy()))
    if outs:
        torch.autograd.backward(outs, grads)

    for name, b in zip(case.bottom_names, bottoms):
        want = case.group("bottomdiff").get(name)
        if want is None:
            continue
        got = b.grad if b.grad is not None else torch.zeros_like(b)
        assert_close(got, want, f"{case.name}: bottomdiff/{name}", exact=exact)
    for i, want in sorted(case.group("paramdiff").items()):
        blob = layer.blobs[int(i)]
        got = blob.grad if blob.grad is not None else torch.zeros_like(blob)
        assert_close(got, want, f"{case.name}: paramdiff/{i}", exact=exact)


def all_types(names: Iterable[str] | None = None) -> list[str]:
    """Distinct layer types that have golden cases (filler cases excluded)."""
    names = case_names() if names is None else names
    return sorted({n.split("__", 1)[0] for n in names if not n.startswith("filler__")})
