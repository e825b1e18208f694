"""Prototxt texts of the benchmark nets (training nets fed from Input layers, in memory)."""
from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"

# name -> (batch, channels, height, width)
TRAIN_SHAPES = {"simpleconv3": (96, 3, 48, 48), "lenet": (64, 1, 28, 28),
                "cifar10_quick": (100, 3, 32, 32), "resnet18": (32, 3, 112, 112)}

DEPLOY_NETS = {
    "squeezenet_v1.1": CORPUS / "DeepScale__SqueezeNet/SqueezeNet_v1.1/deploy.prototxt",
    "googlenet": CORPUS / "BVLC__caffe/models/bvlc_googlenet/deploy.prototxt",
    "resnet50": CORPUS / "KaimingHe__deep-residual-networks/prototxt/ResNet-50-deploy.prototxt",
    "mobilenet_v1": CORPUS / "shicai__MobileNet-Caffe/mobilenet_deploy.prototxt",
}


def _inputs(shape: tuple[int, int, int, int]) -> str:
    n, c, h, w = shape
    return (f'layer {{ name: "data" type: "Input" top: "data" top: "label"\n'
            f'  input_param {{ shape {{ dim: {n} dim: {c} dim: {h} dim: {w} }} shape {{ dim: {n} }} }} }}\n')


def _conv(name: str, bottom: str, n: int, k: int, s: int = 1, p: int = 0, bias: bool = True) -> str:
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"\n'
            f'  convolution_param {{ num_output: {n} kernel_size: {k} stride: {s} pad: {p} '
            f'bias_term: {"true" if bias else "false"} weight_filler {{ type: "xavier" }} }} }}\n')


def _bn_scale(name: str, relu: bool) -> str:
    text = (f'layer {{ name: "{name}/bn" type: "BatchNorm" bottom: "{name}" top: "{name}" }}\n'
            f'layer {{ name: "{name}/scale" type: "Scale" bottom: "{name}" top: "{name}" '
            f'scale_param {{ bias_term: true }} }}\n')
    if relu:
        text += f'layer {{ name: "{name}/relu" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
    return text


def _pool(name: str, bottom: str, method: str, k: int, s: int) -> str:
    return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}"\n'
            f'  pooling_param {{ pool: {method} kernel_size: {k} stride: {s} }} }}\n')


def _ip(name: str, bottom: str, n: int) -> str:
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}"\n'
            f'  inner_product_param {{ num_output: {n} weight_filler {{ type: "xavier" }} }} }}\n')


def _relu(name: str, blob: str) -> str:
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def _loss(bottom: str) -> str:
    return (f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{bottom}" bottom: "label" '
            f'top: "loss" }}\n')


def simpleconv3() -> str:
    text = 'name: "simpleconv3"\n' + _inputs(TRAIN_SHAPES["simpleconv3"])
    bottom = "data"
    for i, n in enumerate((12, 24, 48), start=1):
        text += _conv(f"conv{i}", bottom, n, 3, 2, 1) + _bn_scale(f"conv{i}", relu=True)
        bottom = f"conv{i}"
    return text + _ip("ip1", bottom, 128) + _ip("ip2", "ip1", 2) + _loss("ip2")


def lenet() -> str:
    text = 'name: "LeNet"\n' + _inputs(TRAIN_SHAPES["lenet"])
    text += ('layer { name: "scale" type: "Power" bottom: "data" top: "scaled" '
             'power_param { scale: 0.00390625 } }\n')
    text += _conv("conv1", "scaled", 20, 5) + _pool("pool1", "conv1", "MAX", 2, 2)
    text += _conv("conv2", "pool1", 50, 5) + _pool("pool2", "conv2", "MAX", 2, 2)
    text += _ip("ip1", "pool2", 500) + _relu("relu1", "ip1") + _ip("ip2", "ip1", 10)
    return text + _loss("ip2")


def cifar10_quick() -> str:
    text = 'name: "CIFAR10_quick"\n' + _inputs(TRAIN_SHAPES["cifar10_quick"])
    text += _conv("conv1", "data", 32, 5, 1, 2) + _pool("pool1", "conv1", "MAX", 3, 2)
    text += _relu("relu1", "pool1")
    text += _conv("conv2", "pool1", 32, 5, 1, 2) + _relu("relu2", "conv2")
    text += _pool("pool2", "conv2", "AVE", 3, 2)
    text += _conv("conv3", "pool2", 64, 5, 1, 2) + _relu("relu3", "conv3")
    text += _pool("pool3", "conv3", "AVE", 3, 2)
    return text + _ip("ip1", "pool3", 64) + _ip("ip2", "ip1", 10) + _loss("ip2")


def resnet18() -> str:
    text = 'name: "ResNet18"\n' + _inputs(TRAIN_SHAPES["resnet18"])
    text += _conv("conv1", "data", 64, 7, 2, 3, bias=False) + _bn_scale("conv1", relu=True)
    text += _pool("pool1", "conv1", "MAX", 3, 2)
    bottom, cin = "pool1", 64
    for stage, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=2):
        for block in range(2):
            s = stride if block == 0 else 1
            name = f"res{stage}{'ab'[block]}"
            if s != 1 or cin != cout:
                text += _conv(f"{name}_branch1", bottom, cout, 1, s, 0, bias=False)
                text += _bn_scale(f"{name}_branch1", relu=False)
                shortcut = f"{name}_branch1"
            else:
                shortcut = bottom
            text += _conv(f"{name}_branch2a", bottom, cout, 3, s, 1, bias=False)
            text += _bn_scale(f"{name}_branch2a", relu=True)
            text += _conv(f"{name}_branch2b", f"{name}_branch2a", cout, 3, 1, 1, bias=False)
            text += _bn_scale(f"{name}_branch2b", relu=False)
            text += (f'layer {{ name: "{name}" type: "Eltwise" bottom: "{shortcut}" '
                     f'bottom: "{name}_branch2b" top: "{name}" }}\n')
            text += _relu(f"{name}_relu", name)
            bottom, cin = name, cout
    text += ('layer { name: "pool5" type: "Pooling" bottom: "%s" top: "pool5" '
             'pooling_param { pool: AVE global_pooling: true } }\n' % bottom)
    return text + _ip("fc", "pool5", 10) + _loss("fc")


def deep_thin(depth: int, channels: int = 8, size: int = 8, batch: int = 4) -> str:
    """A training prototxt of ``depth`` 1x1 Convolution + ReLU pairs on a tiny input."""
    text = (f'name: "deep{depth}"\nlayer {{ name: "data" type: "Input" top: "data" top: "label"\n'
            f'  input_param {{ shape {{ dim: {batch} dim: {channels} dim: {size} dim: {size} }} '
            f'shape {{ dim: {batch} }} }} }}\n')
    bottom = "data"
    for i in range(depth):
        text += (f'layer {{ name: "conv{i}" type: "Convolution" bottom: "{bottom}" top: "conv{i}"\n'
                 f'  convolution_param {{ num_output: {channels} kernel_size: 1 '
                 f'weight_filler {{ type: "msra" }} }} }}\n'
                 f'layer {{ name: "relu{i}" type: "ReLU" bottom: "conv{i}" top: "conv{i}" }}\n')
        bottom = f"conv{i}"
    text += (f'layer {{ name: "ip" type: "InnerProduct" bottom: "{bottom}" top: "ip" '
             f'inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}\n'
             f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}\n')
    return text


TRAIN_NETS = {"simpleconv3": simpleconv3, "lenet": lenet, "cifar10_quick": cifar10_quick,
              "resnet18": resnet18}

SOLVER = """net: "{net}"
base_lr: 0.001
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
type: "SGD"
max_iter: 1000000
display: 0
snapshot: 0
snapshot_after_train: false
solver_mode: CPU
random_seed: 1
"""
