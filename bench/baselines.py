"""Hand-written PyTorch versions of the benchmark nets, and a Caffe-equivalent SGD step.

These are the yardstick for caffelike's training speed: the same architecture written the
way a PyTorch user would write it by hand, trained with Caffe's SGD rule
(``v = momentum*v + lr*(g + wd*w); w -= v``) implemented with foreach ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int, s: int, p: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=False),
                               nn.BatchNorm2d(cout, momentum=0.001, eps=1e-5)]
    if relu:
        layers.append(nn.ReLU())
    return layers


class Simpleconv3(nn.Module):
    """The book's Simpleconv3: 3 x [conv3x3/2 + BN + Scale + ReLU], ip 128, ip 2."""

    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for cin, cout in ((3, 12), (12, 24), (24, 48)):
            blocks += [nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                       nn.BatchNorm2d(cout, momentum=0.001, eps=1e-5), nn.ReLU()]
        self.features = nn.Sequential(*blocks)
        self.ip1 = nn.Linear(48 * 6 * 6, 128)
        self.ip2 = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ip2(self.ip1(self.features(x).flatten(1)))


class LeNet(nn.Module):
    """BVLC LeNet (lenet_train_test.prototxt)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.ip1 = nn.Linear(800, 500)
        self.ip2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x * 0.00390625), 2, 2, ceil_mode=True)
        x = F.max_pool2d(self.conv2(x), 2, 2, ceil_mode=True)
        return self.ip2(F.relu(self.ip1(x.flatten(1))))


class Cifar10Quick(nn.Module):
    """BVLC cifar10_quick_train_test.prototxt."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 32, 5, padding=2)
        self.conv3 = nn.Conv2d(32, 64, 5, padding=2)
        self.ip1 = nn.Linear(64 * 4 * 4, 64)
        self.ip2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 3, 2, ceil_mode=True))
        x = F.avg_pool2d(F.relu(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.avg_pool2d(F.relu(self.conv3(x)), 3, 2, ceil_mode=True)
        return self.ip2(self.ip1(x.flatten(1)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.branch2 = nn.Sequential(*conv_bn_relu(cin, cout, 3, stride, 1),
                                     *conv_bn_relu(cout, cout, 3, 1, 1, relu=False))
        self.branch1 = (nn.Sequential(*conv_bn_relu(cin, cout, 1, stride, 0, relu=False))
                        if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.branch1 is None else self.branch1(x)
        return F.relu(shortcut + self.branch2(x))


class ResNet18(nn.Module):
    """ResNet-18 with Caffe-style BatchNorm+Scale (see bench/nets.py's resnet18 prototxt)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(3, 64, 7, 2, 3))
        blocks = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.stem(x), 3, 2, ceil_mode=True)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


class DeepThin(nn.Module):
    """nets.deep_thin by hand: ``depth`` 1x1 convolution + ReLU pairs, then a linear layer."""

    def __init__(self, depth: int, channels: int = 8, size: int = 8):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(depth))
        self.ip = nn.Linear(channels * size * size, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.ip(x.flatten(1))


MODELS = {"simpleconv3": Simpleconv3, "lenet": LeNet, "cifar10_quick": Cifar10Quick,
          "resnet18": ResNet18}


class CaffeSGD:
    """Caffe's SGD with momentum and L2 weight decay, in Caffe's order, with foreach ops."""

    def __init__(self, params: list[nn.Parameter], lr: float, momentum: float, weight_decay: float):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.history = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        torch._foreach_add_(grads, [p.data for p in self.params], alpha=self.weight_decay)
        torch._foreach_mul_(self.history, self.momentum)
        torch._foreach_add_(self.history, grads, alpha=self.lr)
        torch._foreach_sub_([p.data for p in self.params], self.history)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def make_step(name: str, data: torch.Tensor, label: torch.Tensor):
    """A closure running one hand-written training iteration of net ``name``."""
    return make_model_step(MODELS[name](), data, label)


def make_model_step(model: nn.Module, data: torch.Tensor, label: torch.Tensor):
    """A closure running one training iteration of ``model``: cross-entropy, Caffe's SGD."""
    model.train()
    opt = CaffeSGD(list(model.parameters()), lr=0.001, momentum=0.9, weight_decay=5e-4)
    target = label.long()

    def step() -> float:
        opt.zero_grad()
        loss = F.cross_entropy(model(data), target)
        loss.backward()
        opt.step()
        return float(loss.detach().item())

    return step
