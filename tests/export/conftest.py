"""Shared set-up of the export tests: every exported model is run once, in one child process
where ``import caffelike`` raises (plain_runner.py), and the tests compare its outputs with
real Caffe's (tests/golden/nets, tests/golden/layers; NETS.md, LAYERS.md).
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
from caffelike.cli import main as cli_main
from caffelike.export import export, export_pt2, export_pytorch, to_torch
from caffelike.export.ops import OPS
from caffelike.net import Net

from net.conftest import load_json
from net.weight_schemes import scheme_v1

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
NET_CASES = sorted(p.name for p in (GOLDEN / "nets").iterdir() if p.is_dir())
BOOK_DEPLOY = ROOT / "models" / "mouth" / "simpleconv3" / "deploy.prototxt"
BOOK_WEIGHTS = (ROOT / "tests" / "data" / "corpus" / "longpeng2008__yousan.ai" / "simpleconv3" / "test_models"
                / "simpleconv3__iter_10000.caffemodel")
KINDS = ("pytorch", "pt2", "onnx")
# Layer goldens the exporter is expected to refuse (a second, mask top), checked in test_errors.py.
REFUSED_LAYER_CASES = {"Pooling__max_k3s2_mask_top"}


def key(name: str) -> str:
    return name.replace("/", "__SLASH__")


def golden_net(case: str) -> Net:
    """The golden case's TEST net with Caffe's weights (real caffemodel, or scheme_v1 regenerated)."""
    d = GOLDEN / "nets" / case
    meta = load_json(d / "case.json")
    if meta["weights"]["kind"] == "caffemodel":
        return Net(str(d / "net.prototxt"), caffelike.TEST, weights=str(d / meta["weights"]["file"]))
    net = Net(str(d / "net.prototxt"), caffelike.TEST, fill=False)
    for name, arrays in scheme_v1(net, meta["weights"]["seed"], meta["weights"]["gain"]).items():
        for blob, a in zip(net.params[name], arrays):
            blob.data[...] = a
    return net


def layer_cases() -> list[str]:
    """The single-layer goldens of exportable types (all bottoms fed by Input layers)."""
    out = []
    for d in sorted((GOLDEN / "layers").iterdir()):
        if not (d / "case.json").exists() or d.name in REFUSED_LAYER_CASES:
            continue
        meta = load_json(d / "case.json")
        if meta["type"] in OPS and "Input" in (d / "net.prototxt").read_text():
            out.append(d.name)
    return out


def _save_inputs(path: pathlib.Path, arrays: list[np.ndarray]) -> str:
    np.savez(path, **{str(i): a for i, a in enumerate(arrays)})
    return str(path)


def _export_net_case(case: str, work: pathlib.Path, jobs: list[dict]) -> None:
    d = GOLDEN / "nets" / case
    net = golden_net(case)
    data = np.load(d / "data.npz")
    inputs = _save_inputs(work / f"{case}.in.npz", [data[f"input__{key(n)}"] for n in net.inputs])
    export_pytorch(net, work / case)
    export_pt2(to_torch(net), [net.blobs[n].data.shape for n in net.inputs], work / f"{case}.pt2")
    weights = work / f"{case}.caffemodel"
    net.save(str(weights))
    export(str(d / "net.prototxt"), str(weights), str(work / f"{case}.onnx"))
    for kind, path in zip(KINDS, (work / case, work / f"{case}.pt2", work / f"{case}.onnx")):
        jobs.append({"kind": kind, "path": str(path), "inputs": inputs,
                     "outputs": str(work / f"{case}.{kind}.out.npz")})


def _export_book(work: pathlib.Path, jobs: list[dict]) -> None:
    """The book's deploy.prototxt (Input batch 1) and real caffemodel through the CLI, run on the
    16 images of tests/golden/nets/simpleconv3 (dynamic batch)."""
    data = np.load(GOLDEN / "nets" / "simpleconv3" / "data.npz")
    inputs = _save_inputs(work / "book.in.npz", [data["input__data"]])
    outs = {"pytorch": work / "book", "pt2": work / "book.pt2", "onnx": work / "book.onnx"}
    for kind, path in outs.items():
        rc = cli_main(["export", "-model", str(BOOK_DEPLOY), "-weights", str(BOOK_WEIGHTS),
                       "-format", kind, "-o", str(path)])
        assert rc == 0, kind
        jobs.append({"kind": kind, "path": str(path), "inputs": inputs,
                     "outputs": str(work / f"book.{kind}.out.npz")})


def _export_layer_case(case: str, work: pathlib.Path, jobs: list[dict]) -> None:
    d = GOLDEN / "layers" / case
    meta = load_json(d / "case.json")
    phase = caffelike.TRAIN if meta["phase"] == "TRAIN" else caffelike.TEST
    weights = d / "weights.caffemodel"
    net = Net(str(d / "net.prototxt"), phase, weights=str(weights) if weights.exists() else None)
    data = np.load(d / "data.npz")
    inputs = _save_inputs(work / f"{case}.in.npz", [data[f"in/{n}"] for n in net.inputs])
    export_pytorch(net, work / case)
    # Caffe's TRAIN BatchNorm uses the batch statistics: torch's BatchNorm in train mode
    jobs.append({"kind": "pytorch", "path": str(work / case), "inputs": inputs,
                 "outputs": str(work / f"{case}.out.npz"), "train": meta["phase"] == "TRAIN"})


@pytest.fixture(scope="session")
def plain_outputs(tmp_path_factory) -> pathlib.Path:
    """Export every case, run them all in one caffelike-free child; the folder of outputs."""
    work = tmp_path_factory.mktemp("export")
    jobs: list[dict] = []
    for case in NET_CASES:
        _export_net_case(case, work, jobs)
    _export_book(work, jobs)
    for case in layer_cases():
        _export_layer_case(case, work, jobs)
    (work / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("plain_runner.py")),
                          str(work / "jobs.json")], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return work
