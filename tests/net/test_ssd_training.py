"""A small SSD trains through caffelike's solver (weiliu89/caffe ssd layers, issue 16):
AnnotatedData from an LMDB of AnnotatedDatum records, convolutions, Permute + Flatten heads,
PriorBox, MultiBoxLoss with MAX_NEGATIVE mining; the loss falls.
"""
from __future__ import annotations

import pathlib

import cv2
import lmdb
import numpy as np

import caffelike
from caffelike.proto import caffe_pb2

IMAGE = pathlib.Path(__file__).resolve().parents[1] / "data" / "mouth" / "109smile.jpg"
BOX = (0.2, 0.25, 0.7, 0.8)


def _conv(name: str, bottom: str, out: int, stride: int = 1, relu: bool = False) -> str:
    text = (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param {{ '
            f'num_output: {out} kernel_size: 3 pad: 1 stride: {stride} weight_filler {{ type: "xavier" }} }} }}\n')
    return text + (f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}\n' if relu else "")


def _head(name: str, out: int) -> str:
    return (_conv(name, "conv2", out) +
            f'layer {{ name: "{name}_perm" type: "Permute" bottom: "{name}" top: "{name}_perm" '
            "permute_param { order: 0 order: 2 order: 3 order: 1 } }\n"
            f'layer {{ name: "{name}_flat" type: "Flatten" bottom: "{name}_perm" top: "{name}_flat" }}\n')


NET = ('layer { name: "data" type: "AnnotatedData" top: "data" top: "label" data_param { source: "db" '
       "batch_size: 2 backend: LMDB } transform_param { mean_value: 127.5 scale: 0.0078 "
       "resize_param { resize_mode: WARP height: 32 width: 32 } } }\n"
       + _conv("conv1", "data", 8, 2, True) + _conv("conv2", "conv1", 8, 2, True)
       + _head("loc", 4 * 4) + _head("conf", 4 * 3)
       + 'layer { name: "prior" type: "PriorBox" bottom: "conv2" bottom: "data" top: "prior" '
         "prior_box_param { min_size: 8 max_size: 16 aspect_ratio: 2 flip: true variance: 0.1 "
         "variance: 0.1 variance: 0.2 variance: 0.2 } }\n"
       + 'layer { name: "loss" type: "MultiBoxLoss" bottom: "loc_flat" bottom: "conf_flat" bottom: "prior" '
         'bottom: "label" top: "loss" propagate_down: true propagate_down: true propagate_down: false '
         "propagate_down: false multibox_loss_param { num_classes: 3 overlap_threshold: 0.5 "
         "neg_pos_ratio: 3 code_type: CENTER_SIZE mining_type: MAX_NEGATIVE } }\n")


def _write_records(path: pathlib.Path, count: int = 4) -> None:
    jpeg = cv2.imencode(".jpg", cv2.imread(str(IMAGE)))[1].tobytes()
    with lmdb.open(str(path), map_size=1 << 22) as env, env.begin(write=True) as txn:
        for i in range(count):
            record = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
            record.datum.data, record.datum.encoded = jpeg, True
            box = record.annotation_group.add(group_label=1 + i % 2).annotation.add().bbox
            box.xmin, box.ymin, box.xmax, box.ymax = BOX
            txn.put(f"{i:04d}".encode(), record.SerializeToString())


def test_small_ssd_loss_falls(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write_records(tmp_path / "db")
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.01\nmomentum: 0.9\n'
                                              'lr_policy: "fixed"\nmax_iter: 60\nrandom_seed: 1\n'
                                              "snapshot_after_train: false\n")
    solver = caffelike.get_solver("solver.prototxt")
    assert np.array(solver.net.blobs["prior"].data).shape == (1, 2, 8 * 8 * 4 * 4)
    losses = []
    for _ in range(60):
        solver.step(1)
        losses.append(float(np.array(solver.net.blobs["loss"].data)))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses
