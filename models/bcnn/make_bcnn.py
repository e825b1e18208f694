#!/usr/bin/env python3
"""Writes the bilinear CNN prototxts with pycaffe's NetSpec (``import caffelike as caffe``).

    python models/bcnn/make_bcnn.py            # rewrites train_val.prototxt, deploy.prototxt
                                               # and compact_deploy.prototxt

VGG-16's conv1_1..relu5_3 (the B-CNN [D,D] trunk, no pool5), bilinear pooling with signed
square root and L2 normalisation (Python layer ``bilinear_layer.BilinearLayer``), then a
200-way InnerProduct for CUB-200-2011. :func:`bcnn` also builds small variants for tests, and
with ``bilinear_layer="CompactBilinear"`` the fork's layers instead of the Python layer
(CompactBilinear -> SignedSqrt -> L2Normalize, as the book chapter's own model
``compact_train_val.prototxt``, whose deploy net :func:`deploy_from` writes).
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from caffelike.io import read_net

import caffelike as caffe
# pycaffe: `from caffe import layers as L, params as P` (see the caffe alias); the same objects:
from caffelike.net_spec import layers as L, params as P

HERE = os.path.dirname(os.path.abspath(__file__))
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
MEAN_BGR = (103.939, 116.779, 123.68)
FROZEN = [dict(lr_mult=0, decay_mult=0)] * 2
LEARN = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]


def bcnn(train_list: str | None, test_list: str | None, root_folder: str = "", classes: int = 200,
         crop: int = 448, blocks: Sequence[Sequence[int]] = VGG16_BLOCKS, batch: int = 8,
         test_batch: int = 8, finetune_trunk: bool = False, bilinear_layer: str = "BilinearLayer",
         deploy: bool = False, compact_dim: int = 8192) -> "caffe.proto.caffe_pb2.NetParameter":
    """The B-CNN net: ImageData (or Input for deploy) -> VGG trunk -> bilinear -> classifier.

    ``bilinear_layer``: ``BilinearLayer`` / ``BilinearPooling`` (this folder's Python layer) or
    ``CompactBilinear`` (Caffe_Long's Tensor Sketch of ``compact_dim`` outputs, summed over
    positions, then its SignedSqrt and L2Normalize layers).
    """
    n = caffe.NetSpec()
    transform = dict(mirror=True, crop_size=crop, mean_value=list(MEAN_BGR))
    if deploy:
        n.data = L.Input(shape=dict(dim=[1, 3, crop, crop]))
    else:
        n.data, n.label = L.ImageData(
            image_data_param=dict(source=train_list, root_folder=root_folder, batch_size=batch,
                                  shuffle=True, new_height=crop, new_width=crop),
            transform_param=transform, ntop=2, include=dict(phase=caffe.TRAIN))
    top = n.data
    trunk_params = LEARN if finetune_trunk else FROZEN
    for b, widths in enumerate(blocks, 1):
        for i, width in enumerate(widths, 1):
            name = f"conv{b}_{i}"
            n[name] = L.Convolution(top, num_output=width, kernel_size=3, pad=1, param=trunk_params,
                                    weight_filler=dict(type="xavier"), bias_filler=dict(type="constant"))
            n[f"relu{b}_{i}"] = L.ReLU(n[name], in_place=True)
            top = n[name]
        if b < len(blocks):  # no pool after the last block: B-CNN pools bilinearly instead
            n[f"pool{b}"] = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2, stride=2)
            top = n[f"pool{b}"]
    if bilinear_layer == "CompactBilinear":
        n.bilinear = L.CompactBilinear(top, top, num_output=compact_dim, sum_pool=True)
        n.bilinear_sqrt = L.SignedSqrt(n.bilinear)
        features = n.bilinear_l2 = L.L2Normalize(n.bilinear_sqrt)
    else:
        features = n.bilinear = L.Python(top, module="bilinear_layer", layer=bilinear_layer)
    n.fc8_cub = L.InnerProduct(features, num_output=classes, param=LEARN,
                               weight_filler=dict(type="gaussian", std=0.001),
                               bias_filler=dict(type="constant"))
    if deploy:
        n.prob = L.Softmax(n.fc8_cub)
    else:
        n.loss = L.SoftmaxWithLoss(n.fc8_cub, n.label)
        n.accuracy = L.Accuracy(n.fc8_cub, n.label, include=dict(phase=caffe.TEST))
    net = n.to_proto()
    net.name = "bcnn_vgg16" if tuple(map(tuple, blocks)) == VGG16_BLOCKS else "bcnn_small"
    if not deploy and test_list:
        # the TEST data layer: same layer name and tops, val list, centre crop, no mirror
        test = type(net.layer[0])()
        test.CopyFrom(net.layer[0])
        test.image_data_param.source = test_list
        test.image_data_param.shuffle = False
        test.image_data_param.batch_size = test_batch
        test.transform_param.mirror = False
        test.include[0].phase = caffe.TEST
        net.layer.insert(1, test)
    return net


def deploy_from(train_val: str) -> "caffe.proto.caffe_pb2.NetParameter":
    """A train/val net's deploy form: one Input of its TEST batch shape (batch 1), the same layers
    without the data layers, loss and accuracy, and a Softmax ``prob`` on the classifier."""
    net, _ = read_net(train_val)
    data = [layer for layer in net.layer if layer.type == "ImageData"]
    crop = data[-1].transform_param.crop_size
    kept = [layer for layer in net.layer if layer.type not in ("ImageData", "SoftmaxWithLoss", "Accuracy")]
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, crop, crop]))
    deploy = n.to_proto()
    deploy.name = net.name
    deploy.layer.extend(kept)
    prob = deploy.layer.add(name="prob", type="Softmax", top=["prob"])
    prob.bottom.append(kept[-1].top[0])
    return deploy


def main(argv: list[str]) -> int:
    header = ("# Written by models/bcnn/make_bcnn.py (pycaffe NetSpec through caffelike); see README.md.\n"
              "# Needs models/bcnn on PYTHONPATH for the Python layer 'bilinear_layer'.\n")
    train = bcnn("data/cub200/train.txt", "data/cub200/test.txt", root_folder="data/cub200/images/")
    deploy = bcnn(None, None, deploy=True)
    for name, net in (("train_val.prototxt", train), ("deploy.prototxt", deploy)):
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            f.write(header + str(net))
    compact = deploy_from(os.path.join(HERE, "compact_train_val.prototxt"))
    with open(os.path.join(HERE, "compact_deploy.prototxt"), "w", encoding="utf-8") as f:
        f.write("# Written by models/bcnn/make_bcnn.py from compact_train_val.prototxt (the book chapter's\n"
                "# CompactBilinear model); see README.md.\n" + str(compact))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
