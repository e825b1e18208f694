"""The data-parallel path on the CPU: 2 gloo processes == 1 process with the doubled batch.

Caffe's multi-GPU semantics (src/caffe/parallel.cpp): each rank uses the prototxt's
batch_size, data layers read alternate items, gradients are summed and scaled by 1/N. On a
net without BatchNorm, 2 ranks x batch 16 reading items (0,2,..) and (1,3,..) see the same
32 items per iteration as 1 process with batch 32, and SoftmaxWithLoss averages over the
batch, so the weights after N iterations agree (within 1e-5, float summation order aside).
"""
from __future__ import annotations

import shutil

import numpy as np

from .helpers import SOLVERS, model_blobs

NET = """name: "TinyMLP"
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "train_list.txt" batch_size: BATCH shuffle: false } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 16 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.05 momentum: 0.9 weight_decay: 0.001 lr_policy: "fixed" type: "SGD"
max_iter: 6 display: 1 snapshot_prefix: "snap/mlp" random_seed: 11 solver_mode: CPU
"""


def _setup(work, batch):
    work.mkdir()
    for name in ("train.h5", "train_list.txt"):
        shutil.copy(SOLVERS / "sgd_step" / name, work / name)
    (work / "net.prototxt").write_text(NET.replace("BATCH", str(batch)))
    (work / "solver.prototxt").write_text(SOLVER)
    (work / "snap").mkdir()


def test_two_gloo_ranks_equal_one_process_with_double_batch(tmp_path, monkeypatch):
    from caffelike.solver import distributed

    single, multi = tmp_path / "single", tmp_path / "multi"
    _setup(single, 32)
    _setup(multi, 16)
    monkeypatch.chdir(single)
    from caffelike.cli import main
    assert main(["train", "-solver", "solver.prototxt"]) == 0
    monkeypatch.chdir(multi)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert distributed.launch(["-solver", "solver.prototxt", "-tensorboard", "tb"], ["cpu", "cpu"]) == 0
    # snapshots, logs and TensorBoard events come from rank 0 only: one final snapshot, one event file
    assert sorted(p.name for p in (multi / "snap").iterdir()) == ["mlp_iter_6.caffemodel", "mlp_iter_6.solverstate"]
    assert len(list((multi / "tb").glob("events.out.tfevents.*"))) == 1
    got = model_blobs(multi / "snap" / "mlp_iter_6.caffemodel")
    want = model_blobs(single / "snap" / "mlp_iter_6.caffemodel")
    assert list(got) == list(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5)
