"""The fork layers of longpeng2008/Caffe_Long against the real fork's golden cases.

Cases: tests/golden/caffe_long/layers (copied from ../shared/golden/caffe_long, see its README:
Caffe_Long commit ecdb08d, CPU, float32). Each case runs twice: the layer alone (the harness of
golden_case.py: forward, autograd backward with the recorded top diffs) and the whole case net
through the pycaffe API (``caffe.Net(net.prototxt, phase, weights=weights.caffemodel)``,
``forward``, ``backward``), both within the README's tolerances: rtol 1e-4 and atol 1e-5 of the
array's scale; CompactBilinear at 1e-4 of the array's max |value|; bit-exact where the README
says so (ChannelShuffle, ReLU6 forward, MultiLabelAccuracy, LabelSpecificAdd).
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

import caffelike as caffe
from caffelike.layers import LAYERS
from caffelike.proto import caffe_pb2

from .golden_case import assert_close, load_case, run_case

CASES = pathlib.Path(__file__).resolve().parent.parent / "golden" / "caffe_long" / "layers"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "case.json").is_file())

TYPES = ("AdaptedWeightedSigmoidCrossEntropyLoss", "AdaptedWeightedSoftmaxWithLoss", "AsymEuclideanLoss",
         "Bilinear", "ChannelShuffle", "CompactBilinear", "DepthwiseConvolution",
         "FixedWeightedSoftmaxWithLoss", "KnowledgeDistillation", "L1Loss", "L2Normalize",
         "LabelSpecificAdd", "LargeMarginInnerProduct", "MarginInnerProduct", "MultiLabelAccuracy",
         "MultiLabelSigmoidLoss", "ReLU6", "SignedSqrt")
LOSSES = ("AdaptedWeightedSigmoidCrossEntropyLoss", "AdaptedWeightedSoftmaxWithLoss", "AsymEuclideanLoss",
          "FixedWeightedSoftmaxWithLoss", "KnowledgeDistillation", "L1Loss", "MultiLabelSigmoidLoss")
EXACT_FORWARD = {"ChannelShuffle", "ReLU6", "MultiLabelAccuracy", "LabelSpecificAdd"}
EXACT_BACKWARD = {"ChannelShuffle", "LabelSpecificAdd"}


def _type(case: str) -> str:
    return case.split("__", 1)[0]


def _close(actual, expected: np.ndarray, what: str, type_name: str, exact: bool) -> None:
    if type_name == "CompactBilinear" and not exact:
        actual = np.asarray(actual.detach().numpy() if isinstance(actual, torch.Tensor) else actual)
        assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
        scale = float(np.abs(expected).max()) or 1.0
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * scale, err_msg=what)
        return
    assert_close(actual, expected, what, exact=exact)


def test_every_fork_type_has_cases_and_is_registered() -> None:
    assert sorted({_type(c) for c in CASE_NAMES}) == sorted(TYPES)
    for t in TYPES:
        assert LAYERS.get(t).is_loss == (t in LOSSES), t


@pytest.mark.parametrize("case", CASE_NAMES)
def test_layer_alone(case: str) -> None:
    t = _type(case)
    c = load_case(CASES / case)
    if t == "CompactBilinear" or len(set(c.bottom_names)) < len(c.bottom_names):
        _two_input_alone(c)  # scale-relative tolerance, or one blob fed twice
        return
    run_case(c, exact_forward=t in EXACT_FORWARD, exact_backward=t in EXACT_BACKWARD)


def _two_input_alone(c) -> None:
    """One top, no params: the same tensor for a blob named twice (Caffe's split sums its diffs)."""
    from .golden_case import build_layer

    layer = build_layer(c)
    ins = c.group("in")
    tensors = {b: torch.from_numpy(ins[b].copy()).requires_grad_(True) for b in c.bottom_names}
    (top,) = layer(*[tensors[b] for b in c.bottom_names])
    _close(top, c.group("out")[c.top_names[0]], f"{c.name}: out", c.type, False)
    top.backward(torch.from_numpy(c.group("topdiff")[c.top_names[0]].copy()))
    for name, want in c.group("bottomdiff").items():
        _close(tensors[name].grad, want, f"{c.name}: bottomdiff/{name}", c.type, False)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_through_pycaffe(case: str) -> None:
    """The case's own net.prototxt (+ weights.caffemodel written by the fork) through caffe.Net."""
    folder = CASES / case
    meta = json.loads((folder / "case.json").read_text())
    t = meta["type"]
    phase = caffe.TRAIN if meta["phase"] == "TRAIN" else caffe.TEST
    weights = folder / "weights.caffemodel"
    kwargs = {"weights": str(weights)} if weights.is_file() else {}
    net = caffe.Net(str(folder / "net.prototxt"), phase, **kwargs)
    with np.load(folder / "data.npz") as z:
        arrays = {k: z[k] for k in z.files}
    layer = meta["layer_name"]
    for name in net.inputs:
        net.blobs[name].data[...] = arrays[f"in/{name}"]
    net.forward()
    for top in meta["tops"]:
        _close(net.blobs[top].data, arrays[f"out/{top}"], f"{case}: out/{top}", t, t in EXACT_FORWARD)
    for key, want in arrays.items():
        if key.startswith("param_after/"):
            i = int(key.split("/")[1])
            _close(net.params[layer][i].data, want, f"{case}: {key}", t, False)
    if not meta["backward"]:
        return
    diffs = {top: arrays[f"topdiff/{top}"] for top in net.outputs}
    net.backward(**diffs)
    for b in meta["backward_bottoms"]:
        _close(net.blobs[b].diff, arrays[f"bottomdiff/{b}"], f"{case}: bottomdiff/{b}", t,
               t in EXACT_BACKWARD)
    for key, want in arrays.items():
        if key.startswith("paramdiff/"):
            i = int(key.split("/")[1])
            _close(net.params[layer][i].diff, want, f"{case}: {key}", t, False)


def test_compact_bilinear_hash_is_glibc_rand_after_srand_1() -> None:
    from caffelike.layers.caffe_long_bilinear import compact_bilinear_hash, glibc_rand

    # glibc's documented first values of rand() after srand(1)
    assert glibc_rand(1, 3) == [1804289383, 846930886, 1681692777]
    for case in CASE_NAMES:
        if _type(case) != "CompactBilinear":
            continue
        meta = json.loads((CASES / case / "case.json").read_text())
        want = meta["compact_bilinear_hash"]
        channels = [shape[1] for shape in meta["bottoms"].values()]
        if len(channels) == 1:
            channels *= 2
        d = json.loads((CASES / case / "case.json").read_text())["tops"]["out"][1]
        got = compact_bilinear_hash(channels, d)
        assert [got[0][0], got[0][1], got[1][0], got[1][1]] == [
            want["h_bottom0"], want["s_bottom0"], want["h_bottom1"], want["s_bottom1"]], case


def _lp(type_name: str, bottoms, tops, **fields) -> caffe_pb2.LayerParameter:
    return caffe_pb2.LayerParameter(name="l", type=type_name, bottom=list(bottoms), top=list(tops), **fields)


def test_margin_counter_advances_per_forward_and_set_iteration_places_it() -> None:
    # margin_inner_product_layer.cpp: iter_ += 1 before lambda in every forward
    p = caffe_pb2.MarginInnerProductParameter(num_output=3, type=1, base=1000, gamma=0.5, power=1,
                                              iteration=10)
    lp = _lp("MarginInnerProduct", ["x", "y"], ["s", "lambda"], margin_inner_product_param=p)
    layer = LAYERS.get("MarginInnerProduct").cls(lp, [(2, 4), (2,)], caffe.TRAIN)
    x, y = torch.randn(2, 4), torch.tensor([0.0, 2.0])
    assert layer(x, y)[1].item() == pytest.approx(1000 / (1 + 0.5 * 11), rel=1e-6)
    assert layer(x, y)[1].item() == pytest.approx(1000 / (1 + 0.5 * 12), rel=1e-6)
    layer.set_iteration(99)  # as if 99 training forwards had run: the next one uses 10 + 99 + 1
    assert layer(x, y)[1].item() == pytest.approx(1000 / (1 + 0.5 * 110), rel=1e-6)


def test_in_place_is_refused_where_the_fork_checks_it() -> None:
    from caffelike.errors import LayerError

    for t in ("SignedSqrt", "L2Normalize"):
        with pytest.raises(LayerError, match="cannot run in place"):
            LAYERS.get(t).cls(_lp(t, ["x"], ["x"]), [(2, 3)], caffe.TRAIN)


def test_solver_resume_restarts_the_margin_counter_as_the_fork(tmp_path, monkeypatch) -> None:
    """The fork's layers count their own forwards from `iteration` and never read the solver's
    iteration, so a run resumed from a snapshot starts the count again (fork users edit
    `iteration` in the prototxt to resume the schedule)."""
    from caffelike.solver import get_solver

    (tmp_path / "net.prototxt").write_text('''
layer { name: "x" type: "DummyData" top: "x" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "MarginInnerProduct" bottom: "x" bottom: "label" top: "ip" top: "lambda"
  margin_inner_product_param { num_output: 3 type: DOUBLE base: 100 gamma: 0.1 iteration: 5
    weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
''')
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: 3 iter_size: 2 '
        'snapshot: 3 snapshot_prefix: "s" display: 0\n')
    monkeypatch.chdir(tmp_path)

    def counter(solver) -> int:
        return [m.iteration for lay, m in solver.net.graph.pairs() if lay.name == "ip"][0]

    solver = get_solver("solver.prototxt")
    solver.solve()
    assert counter(solver) == 5 + 3 * 2
    resumed = get_solver("solver.prototxt")
    assert counter(resumed) == 5
    resumed.restore("s_iter_3.solverstate")
    assert counter(resumed) == 5
