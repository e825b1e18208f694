"""Child process of the export tests: run exported models where ``import caffelike`` fails.

``python plain_runner.py JOBS.json``: each job names a kind (``pytorch``: a folder with
model.py and weights.pth; ``pt2``: a torch.export file; ``onnx``: an ONNX file run with
onnxruntime), an .npz of inputs (in the net's input order, keys ``0``, ``1``, ...), the .npz
to write the outputs to and whether to run in train mode. Only torch, numpy, onnxruntime and
the standard library are used; caffelike is blocked before anything else is imported.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import json
import sys


class _BlockCaffelike(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "caffelike" or name.startswith("caffelike."):
            raise ImportError("caffelike is blocked in this process (the export must not need it)")
        return None


sys.meta_path.insert(0, _BlockCaffelike())

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _inputs(path: str) -> list[np.ndarray]:
    data = np.load(path)
    return [data[str(i)] for i in range(len(data.files))]


def _run_pytorch(folder: str, arrays: list[np.ndarray], train: bool) -> dict:
    spec = importlib.util.spec_from_file_location(f"exported_{abs(hash(folder))}", f"{folder}/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net()
    net.load_state_dict(torch.load(f"{folder}/weights.pth", weights_only=True))
    net.train(train)
    with torch.no_grad():
        return net(*[torch.from_numpy(a) for a in arrays])


def _run_pt2(path: str, arrays: list[np.ndarray], train: bool) -> dict:
    net = torch.export.load(path).module()
    with torch.no_grad():
        return net(*[torch.from_numpy(a) for a in arrays])


def _run_onnx(path: str, arrays: list[np.ndarray], train: bool) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), arrays)}
    return {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, feeds))}


RUNNERS = {"pytorch": _run_pytorch, "pt2": _run_pt2, "onnx": _run_onnx}


def main(jobs_file: str) -> None:
    try:
        import caffelike  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("caffelike could be imported: the block did not work")
    with open(jobs_file) as f:
        jobs = json.load(f)
    for job in jobs:
        out = RUNNERS[job["kind"]](job["path"], _inputs(job["inputs"]), job.get("train", False))
        np.savez(job["outputs"], **{k: np.asarray(v) for k, v in out.items()})


if __name__ == "__main__":
    main(sys.argv[1])
