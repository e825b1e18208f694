"""Fork layers (issue 16) in the plain-PyTorch export (issue 18): model.py + weights.pth and pt2.

Small nets of the deploy-time fork layers, and MobileNet-SSD's deploy up to its heads
(mbox_loc, mbox_conf_flatten, mbox_priorbox), are exported and run in ONE child process where
``import caffelike`` raises (plain_runner.py). Expected values: caffelike's own Net forward
on the same weights (each fork layer is checked against its fork's source and OpenCV dnn in
tests/layers and tests/net), and for Caffe_Long's DepthwiseConvolution and ReLU6 also the real
fork's outputs (tests/golden/caffe_long/layers, golden tolerance). Data movement (Permute, ShuffleChannel, Reorg, Upsample,
PriorBox, Flatten, Concat) must be bit-exact, arithmetic within float32 rounding.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import caffelike
from caffelike.errors import LayerError
from caffelike.export import export_pt2, export_pytorch, to_torch
from caffelike.net import Net

from net.conftest import assert_close_scaled

TESTS = pathlib.Path(__file__).resolve().parents[1]
SSD_DEPLOY = TESTS / "data" / "corpus" / "chuanqi305__MobileNet-SSD" / "voc" / "MobileNetSSD_deploy.prototxt"
CAFFE_LONG = TESTS / "golden" / "caffe_long" / "layers"
CAFFE_LONG_CASES = sorted(p.name for p in CAFFE_LONG.iterdir() if p.name.split("__")[0] in
                          ("DepthwiseConvolution", "ReLU6"))
RUNNER = pathlib.Path(__file__).with_name("plain_runner.py")
RTOL, ATOL = 1e-5, 1e-6  # float32 rounding of a different (but equivalent) operation order


def _input(name: str, shape: tuple) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def _layer(name: str, type_: str, bottoms: tuple, extra: str = "", top: str | None = None) -> str:
    bottom = " ".join(f'bottom: "{b}"' for b in bottoms)
    return f'layer {{ name: "{name}" type: "{type_}" {bottom} top: "{top or name}" {extra} }}\n'


CONV = 'convolution_param { kernel_size: 3 pad: 1 %s }'
# case: (prototxt text, {input: shape})
NETS = {
    "senet_shufflenet": (
        _input("a", (2, 6, 1, 1)) + _input("x", (2, 6, 5, 4)) + _input("y", (2, 6, 5, 4))
        + _layer("axpy", "Axpy", ("a", "x", "y"))
        + _layer("shuffle", "ShuffleChannel", ("axpy",), "shuffle_channel_param { group: 3 }"),
        {"a": (2, 6, 1, 1), "x": (2, 6, 5, 4), "y": (2, 6, 5, 4)}),
    "mobilenet_convs": (
        _input("data", (2, 4, 7, 6))
        + _layer("dw", "ConvolutionDepthwise", ("data",), CONV % "num_output: 4")
        + _layer("dw_relu6", "ReLU6", ("dw",), top="dw")
        + _layer("dwc", "DepthwiseConvolution", ("dw",), CONV % "num_output: 8 group: 4 stride: 2")
        + _layer("leaky6", "ReLU6", ("dwc",), "relu6_param { negative_slope: 0.1 }"),
        {"data": (2, 4, 7, 6)}),
    "ssd_heads": (
        _input("data", (2, 4, 3, 5))
        + _layer("norm", "Normalize", ("data",), "norm_param { across_spatial: false eps: 1e-10 }")
        + _layer("norm_shared", "Normalize", ("data",), "norm_param { channel_shared: true }")
        + _layer("perm", "Permute", ("norm",), "permute_param { order: 0 order: 2 order: 3 order: 1 }"),
        {"data": (2, 4, 3, 5)}),
    "pspnet_interp": (
        _input("data", (2, 3, 5, 4))
        + _layer("zoom", "Interp", ("data",), "interp_param { zoom_factor: 3 }")
        + _layer("sized", "Interp", ("data",), "interp_param { height: 9 width: 2 }")
        + _layer("shrink", "Interp", ("data",), "interp_param { shrink_factor: 2 pad_beg: -1 pad_end: -1 }")
        + _layer("bn_psp", "BN", ("sized",), "bn_param { eps: 1e-5 momentum: 0.95 }")
        + _layer("bn_frozen", "BN", ("zoom",), "bn_param { frozen: true }"),
        {"data": (2, 3, 5, 4)}),
    "yolo_segnet": (
        _input("data", (2, 8, 4, 6))
        + _layer("up", "Upsample", ("data",), "upsample_param { scale: 2 }")
        + _layer("reorg", "Reorg", ("data",), "reorg_param { stride: 2 }")
        + _layer("unreorg", "Reorg", ("data",), "reorg_param { stride: 2 reverse: true }")
        + _layer("bn_seg", "BN", ("up",), "bn_param { bn_mode: INFERENCE }"),
        {"data": (2, 8, 4, 6)}),
}
EXACT = {"shuffle", "perm", "up", "reorg", "unreorg", "mbox_priorbox"}  # outputs compared bit-exactly


def _fill(net: Net, seed: int) -> None:
    """Seeded weights: He-normal filters, positive per-channel statistics (BN variances)."""
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            shape = blob.data.shape
            scale = np.sqrt(2.0 / max(1, int(np.prod(shape[1:])))) if len(shape) > 1 else 0.5
            blob.data[...] = np.abs(rng.normal(scale=scale, size=shape)) + 0.1


def _ssd_prototxt(tmp: pathlib.Path) -> pathlib.Path:
    """MobileNet-SSD's deploy without its last layer (DetectionOutput), batch 2."""
    text = SSD_DEPLOY.read_text()
    head = text[:text.rindex("layer {")]
    assert 'type: "DetectionOutput"' in text[len(head):]
    path = tmp / "mobilenet_ssd_heads.prototxt"
    path.write_text(head.replace("dim: 1\n", "dim: 2\n", 1))
    return path


def _save(path: pathlib.Path, arrays: list[np.ndarray]) -> str:
    np.savez(path, **{str(i): a for i, a in enumerate(arrays)})
    return str(path)


@pytest.fixture(scope="module")
def fork_exports(tmp_path_factory):
    """{case: (caffelike's outputs, folder)}: every case exported (pytorch, pt2) and run in one
    caffelike-free child; MobileNet-SSD's pt2 also on batch 1 (dynamic batch)."""
    work = tmp_path_factory.mktemp("fork_export")
    rng = np.random.default_rng(7)
    cases = {}
    for i, (case, (text, shapes)) in enumerate(NETS.items()):
        path = work / f"{case}.prototxt"
        path.write_text(f'name: "{case}"\n' + text)
        cases[case] = (Net(str(path), caffelike.TEST), [rng.normal(size=s).astype(np.float32) for s in shapes.values()])
        _fill(cases[case][0], i)
    ssd = Net(str(_ssd_prototxt(work)), caffelike.TEST)
    _fill(ssd, 99)
    cases["mobilenet_ssd"] = (ssd, [rng.uniform(-1, 1, size=(2, 3, 300, 300)).astype(np.float32)])
    for case in CAFFE_LONG_CASES:
        weights = CAFFE_LONG / case / "weights.caffemodel"
        net = Net(str(CAFFE_LONG / case / "net.prototxt"), caffelike.TEST,
                  weights=str(weights) if weights.exists() else None)
        cases[case] = (net, [np.load(CAFFE_LONG / case / "data.npz")["in/data"]])
    jobs, expected = [], {}
    for case, (net, arrays) in cases.items():
        expected[case] = {k: np.array(v) for k, v in net.forward(**dict(zip(net.inputs, arrays))).items()}
        inputs = _save(work / f"{case}.in.npz", arrays)
        export_pytorch(net, work / case)
        export_pt2(to_torch(net), [a.shape for a in arrays], work / f"{case}.pt2")
        for kind, target in (("pytorch", work / case), ("pt2", work / f"{case}.pt2")):
            jobs.append({"kind": kind, "path": str(target), "inputs": inputs,
                         "outputs": str(work / f"{case}.{kind}.out.npz")})
    jobs.append({"kind": "pt2", "path": str(work / "mobilenet_ssd.pt2"),
                 "inputs": _save(work / "ssd1.in.npz", [cases["mobilenet_ssd"][1][0][1:]]),
                 "outputs": str(work / "mobilenet_ssd.batch1.out.npz")})
    (work / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, str(RUNNER), str(work / "jobs.json")], capture_output=True,
                         text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return work, expected


def _compare(out: dict, expected: dict, what: str) -> None:
    assert sorted(out) == sorted(expected), what
    for name, want in expected.items():
        if name in EXACT:
            np.testing.assert_array_equal(out[name], want, err_msg=f"{what} {name}")
        else:
            np.testing.assert_allclose(out[name], want, rtol=RTOL, atol=ATOL, err_msg=f"{what} {name}")


@pytest.mark.parametrize("kind", ("pytorch", "pt2"))
@pytest.mark.parametrize("case", [*NETS, "mobilenet_ssd"])
def test_fork_net_export_matches_net(fork_exports, case: str, kind: str) -> None:
    work, expected = fork_exports
    out = np.load(work / f"{case}.{kind}.out.npz")
    _compare({k: out[k] for k in out.files}, expected[case], f"{case} {kind}")


@pytest.mark.parametrize("kind", ("pytorch", "pt2"))
@pytest.mark.parametrize("case", CAFFE_LONG_CASES)
def test_caffe_long_export_matches_the_fork(fork_exports, case: str, kind: str) -> None:
    """Caffe_Long's DepthwiseConvolution (group = channels, or dense without group) and ReLU6
    (with and without a slope) exported, against the real fork's outputs."""
    work, _ = fork_exports
    out = np.load(work / f"{case}.{kind}.out.npz")
    assert out.files == ["out"]
    assert_close_scaled(out["out"], np.load(CAFFE_LONG / case / "data.npz")["out/out"], f"{case} {kind}")


def test_mobilenet_ssd_pt2_batch_is_dynamic(fork_exports) -> None:
    """The pt2 traced at batch 2 runs batch 1: loc/conf follow the batch, the priors do not."""
    work, expected = fork_exports
    out = np.load(work / "mobilenet_ssd.batch1.out.npz")
    full = expected["mobilenet_ssd"]
    assert out["mbox_priorbox"].shape == (1, 2, 1917 * 4)
    _compare({k: out[k] for k in out.files}, {k: v if k == "mbox_priorbox" else v[1:] for k, v in full.items()},
             "mobilenet_ssd pt2 batch 1")


def test_detection_output_is_refused_by_name(tmp_path) -> None:
    net = Net(str(SSD_DEPLOY), caffelike.TEST)
    with pytest.raises(LayerError, match=r"detection_out.*DetectionOutput|DetectionOutput.*detection_out"):
        export_pytorch(net, tmp_path / "ssd")


def test_upsample_with_mask_is_refused(tmp_path) -> None:
    path = tmp_path / "unpool.prototxt"
    path.write_text(_input("data", (1, 2, 4, 4)) + _input("mask", (1, 2, 4, 4))
                    + _layer("unpool", "Upsample", ("data", "mask"), "upsample_param { scale: 2 }"))
    with pytest.raises(LayerError, match="Upsample.*mask top of a Pooling layer"):
        export_pytorch(Net(str(path), caffelike.TEST), tmp_path / "unpool")


def test_learning_bn_is_refused(tmp_path) -> None:
    path = tmp_path / "bn.prototxt"
    path.write_text(_input("data", (2, 3, 4, 4)) + _layer("bn", "BN", ("data",), "bn_param { bn_mode: LEARN }"))
    with pytest.raises(LayerError, match="batch statistics"):
        export_pytorch(Net(str(path), caffelike.TEST), tmp_path / "bn")
