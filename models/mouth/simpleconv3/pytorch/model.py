"""simpleconv3: a Caffe net exported to plain PyTorch by caffelike (``caffelike export -format pytorch``).

Imports torch only. Use:

    net = Net()
    net.load_state_dict(torch.load("weights.pth", weights_only=True))
    net.eval()
    outputs = net(data)  # {'prob': ...}

Layers in prototxt order; where Caffe's semantics differ from torch's a short helper module
below implements Caffe's. Inputs: data 1x3x48x48.
"""
import torch


def _line_up(x: torch.Tensor, operand: torch.Tensor, axis: int) -> torch.Tensor:
    """``operand`` viewed to broadcast against ``x`` from ``axis`` on (Caffe's Scale/Bias rule)."""
    if operand.dim() == 0:
        return operand
    return operand.reshape((1,) * axis + tuple(operand.shape) + (1,) * (x.dim() - axis - operand.dim()))


class Scale(torch.nn.Module):
    """Caffe Scale: x * weight (+ bias), the parameters covering axes axis .. axis+len(shape)-1.

    With ``shape=None`` the scale is the second input (Caffe's two-bottom form); ``bias_shape``
    gives the learned bias (None: no bias).
    """

    def __init__(self, axis: int, shape: tuple | None, bias_shape: tuple | None = None):
        super().__init__()
        self.axis = axis
        self.weight = torch.nn.Parameter(torch.ones(shape)) if shape is not None else None
        self.bias = torch.nn.Parameter(torch.zeros(bias_shape)) if bias_shape is not None else None

    def forward(self, x: torch.Tensor, *scale: torch.Tensor) -> torch.Tensor:
        y = x * _line_up(x, scale[0] if scale else self.weight, self.axis)
        return y + _line_up(x, self.bias, self.axis) if self.bias is not None else y


class FlattenLinear(torch.nn.Linear):
    """Caffe InnerProduct: the axes from ``axis`` on are flattened, then a Linear map."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, axis: int = 1):
        super().__init__(in_features, out_features, bias)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(self.axis))


class Net(torch.nn.Module):
    """simpleconv3: forward(data) -> {'prob'}."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 12, kernel_size=3, stride=2, padding=1)
        self.conv1_bn = torch.nn.BatchNorm2d(12, eps=1e-05, momentum=0.001, affine=False)  # conv1/bn
        self.conv1_scale = Scale(axis=1, shape=(12,), bias_shape=(12,))  # conv1/scale
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(12, 24, kernel_size=3, stride=2, padding=1)
        self.conv2_bn = torch.nn.BatchNorm2d(24, eps=1e-05, momentum=0.001, affine=False)  # conv2/bn
        self.conv2_scale = Scale(axis=1, shape=(24,), bias_shape=(24,))  # conv2/scale
        self.relu2 = torch.nn.ReLU()
        self.conv3 = torch.nn.Conv2d(24, 48, kernel_size=3, stride=2, padding=1)
        self.conv3_bn = torch.nn.BatchNorm2d(48, eps=1e-05, momentum=0.001, affine=False)  # conv3/bn
        self.conv3_scale = Scale(axis=1, shape=(48,), bias_shape=(48,))  # conv3/scale
        self.relu3 = torch.nn.ReLU()
        self.ip1 = FlattenLinear(1728, 128)
        self.ip2 = torch.nn.Linear(128, 2)
        self.loss = torch.nn.Softmax(dim=1)

    def forward(self, data):
        conv1 = self.conv1(data)
        conv1 = self.conv1_bn(conv1)
        conv1 = self.conv1_scale(conv1)
        conv1 = self.relu1(conv1)
        conv2 = self.conv2(conv1)
        conv2 = self.conv2_bn(conv2)
        conv2 = self.conv2_scale(conv2)
        conv2 = self.relu2(conv2)
        conv3 = self.conv3(conv2)
        conv3 = self.conv3_bn(conv3)
        conv3 = self.conv3_scale(conv3)
        conv3 = self.relu3(conv3)
        ip1 = self.ip1(conv3)
        ip2 = self.ip2(ip1)
        prob = self.loss(ip2)
        return {'prob': prob}
