"""The Python layer: pycaffe-style classes (numpy blobs, user backward) and torch nn.Modules.

Expected values come from real Caffe's golden EuclideanLoss case (run through Caffe's own
example Python layer, examples/pycaffe/layers/pyloss.py, rewritten here) and from the
behaviour pinned by Caffe's python/caffe/test/test_python_layer.py.
"""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

import caffelike
from caffelike.errors import LayerError
from caffelike.layers import LAYERS
from caffelike.blob import Blob
from caffelike.layers.python import check_allowed, python_layers
from caffelike.proto import caffe_pb2

from .golden_case import assert_close, load_case

MODULE = "caffelike_test_pylayers"

SOURCE = textwrap.dedent('''
    import numpy as np
    import torch
    import caffelike as caffe


    class EuclideanLossLayer(caffe.Layer):
        """Caffe's examples/pycaffe/layers/pyloss.py, top made a 0-axis blob."""

        def setup(self, bottom, top):
            if len(bottom) != 2:
                raise Exception("Need two inputs to compute distance.")

        def reshape(self, bottom, top):
            if bottom[0].count != bottom[1].count:
                raise Exception("Inputs must have the same dimension.")
            self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
            top[0].reshape()

        def forward(self, bottom, top):
            self.diff[...] = bottom[0].data - bottom[1].data
            top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.

        def backward(self, top, propagate_down, bottom):
            for i in range(2):
                if not propagate_down[i]:
                    continue
                sign = 1 if i == 0 else -1
                bottom[i].diff[...] = sign * top[0].diff * self.diff / bottom[i].num


    class SimpleLayer(caffe.Layer):
        """Multiplies by ten (python/caffe/test/test_python_layer.py)."""

        def setup(self, bottom, top):
            pass

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = 10 * bottom[0].data

        def backward(self, top, propagate_down, bottom):
            bottom[0].diff[...] = 10 * top[0].diff


    class ParameterLayer(caffe.Layer):
        """Sets its parameter's diff to 1 (python/caffe/test/test_python_layer.py)."""

        def setup(self, bottom, top):
            self.blobs.add_blob(1)
            self.blobs[0].data[0] = 0

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            pass

        def backward(self, top, propagate_down, bottom):
            self.blobs[0].diff[0] = 1


    class ScaleLayer(caffe.Layer):
        """y = w * x with one learned scalar w, initialised from param_str."""

        def setup(self, bottom, top):
            self.blobs.add_blob(1)
            self.blobs[0].data[0] = float(self.param_str)

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)

        def forward(self, bottom, top):
            top[0].data[...] = self.blobs[0].data[0] * bottom[0].data

        def backward(self, top, propagate_down, bottom):
            self.blobs[0].diff[0] += np.sum(top[0].diff * bottom[0].data)
            if propagate_down[0]:
                bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff


    class PhaseLayer(caffe.Layer):
        """Outputs its phase (python/caffe/test/test_python_layer.py)."""

        def reshape(self, bottom, top):
            top[0].reshape()

        def forward(self, bottom, top):
            top[0].data[()] = self.phase


    class ExceptionLayer(caffe.Layer):
        def setup(self, bottom, top):
            raise RuntimeError("boom")


    class Affine(torch.nn.Module):
        """A torch module: two tops, a*x + b and x*x, with param_str giving a."""

        def __init__(self, param_str=""):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(float(param_str or 1.0)))
            self.b = torch.nn.Parameter(torch.zeros(3))

        def forward(self, x):
            return [self.a * x + self.b, x * x]


    class Flatten(torch.nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], -1)

    NOT_A_CLASS = 3
''')


@pytest.fixture(scope="module", autouse=True)
def user_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pylayers")
    (folder / f"{MODULE}.py").write_text(SOURCE)
    (folder / "caffelike_test_broken.py").write_text("raise ImportError('missing dependency xyz')\n")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)


def _layer(cls_name: str, shapes, n_tops: int = 1, phase: int = caffe_pb2.TRAIN,
           module: str = MODULE, param_str: str = ""):
    lp = caffe_pb2.LayerParameter(
        name="py", type="Python", bottom=[f"b{i}" for i in range(len(shapes))],
        top=[f"t{i}" for i in range(n_tops)],
        python_param=caffe_pb2.PythonParameter(module=module, layer=cls_name, param_str=param_str))
    return LAYERS.get("Python").cls(lp, [tuple(s) for s in shapes], phase)


def test_caffe_layer_is_the_layer_base_class() -> None:
    import caffelike.layers
    from caffelike.layers.base import Layer
    assert caffelike.Layer is caffelike.layers.Layer is Layer


def test_pycaffe_euclidean_loss_matches_caffe_golden() -> None:
    case = load_case("EuclideanLoss__basic")
    a_np, b_np = case.arrays["in/a"], case.arrays["in/b"]
    layer = _layer("EuclideanLossLayer", [a_np.shape, b_np.shape])
    assert layer.top_shapes([a_np.shape, b_np.shape]) == [()]
    a = torch.from_numpy(a_np.copy()).requires_grad_(True)
    b = torch.from_numpy(b_np.copy()).requires_grad_(True)
    (loss,) = layer(a, b)
    assert_close(loss, case.arrays["out/loss"], "out/loss")
    loss.backward(torch.tensor(case.arrays["topdiff/loss"]))
    assert_close(a.grad, case.arrays["bottomdiff/a"], "bottomdiff/a")
    assert_close(b.grad, case.arrays["bottomdiff/b"], "bottomdiff/b")


def test_simple_layer_forward_backward_and_reshape() -> None:
    layer = _layer("SimpleLayer", [(10, 9, 8)])
    assert layer.top_shapes([(10, 9, 8)]) == [(10, 9, 8)]
    assert layer.top_shapes([(4, 4, 4, 4)]) == [(4, 4, 4, 4)]
    x = torch.full((4, 4, 4, 4), 8.0, requires_grad=True)
    (y,) = layer(x)
    assert torch.all(y == 80.0)
    y.backward(torch.full_like(y, 7.0))
    assert torch.all(x.grad == 70.0)


def test_parameter_blob_gets_the_diff_written_by_backward() -> None:
    layer = _layer("ParameterLayer", [(10, 9, 8)])
    assert len(layer.blobs) == 1 and layer.blobs[0].tolist() == [0.0]
    x = torch.ones(10, 9, 8, requires_grad=True)
    (y,) = layer(x)
    y.sum().backward()
    assert layer.blobs[0].grad.tolist() == [1.0]
    with torch.no_grad():  # a solver-like update is seen by the user's blob
        layer.blobs[0] += layer.blobs[0].grad
    assert layer.user.blobs[0].data[0] == 1.0  # the user's blob views the parameter
    with torch.no_grad():  # a replaced tensor (weights loaded by assignment) is seen next call
        layer.blobs[0].data = torch.tensor([5.0])
    layer(x)
    assert layer.user.blobs[0].data[0] == 5.0


def test_learned_scale_layer_gradients() -> None:
    layer = _layer("ScaleLayer", [(2, 3)], param_str="1.5")
    assert layer.blobs[0].item() == 1.5
    x = torch.arange(6.0).reshape(2, 3).requires_grad_(True)
    (y,) = layer(x)
    assert torch.equal(y, 1.5 * x.detach())
    dy = torch.ones(2, 3)
    y.backward(dy)
    assert layer.blobs[0].grad.item() == float(x.detach().sum())  # sum(dy * x)
    assert torch.equal(x.grad, torch.full((2, 3), 1.5))
    (y,) = layer(x)  # a second backward accumulates, as Caffe's param diffs do
    y.backward(dy)
    assert layer.blobs[0].grad.item() == 2 * float(x.detach().sum())


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_phase_is_visible_to_the_layer(phase: int) -> None:
    layer = _layer("PhaseLayer", [], phase=phase)
    assert layer.top_shapes([]) == [()]
    (top,) = layer()
    assert top.shape == () and top.item() == phase


def test_user_exception_propagates_with_a_note() -> None:
    with pytest.raises(RuntimeError, match="boom") as info:
        _layer("ExceptionLayer", [(2, 3)])
    assert any("ExceptionLayer" in note for note in getattr(info.value, "__notes__", []))


def test_torch_module_layer() -> None:
    layer = _layer("Affine", [(2, 3)], n_tops=2, param_str="2.0")
    assert [tuple(b.shape) for b in layer.blobs] == [(), (3,)]
    assert layer.top_shapes([(2, 3)]) == [(2, 3), (2, 3)]
    x = torch.randn(2, 3, requires_grad=True)
    y, sq = layer(x)
    assert torch.allclose(y, 2.0 * x + 0.0)
    (y.sum() + sq.sum()).backward()
    assert torch.allclose(x.grad, 2.0 + 2 * x.detach())
    assert layer.blobs[0].grad.item() == pytest.approx(float(x.detach().sum()))
    assert layer.blobs[1].grad.tolist() == [2.0, 2.0, 2.0]


def test_torch_module_top_count_mismatch() -> None:
    layer = _layer("Flatten", [(2, 3, 4)], n_tops=2)
    with pytest.raises(LayerError, match="expected 2"):
        layer(torch.zeros(2, 3, 4))


def test_missing_module_and_class_are_layer_errors() -> None:
    with pytest.raises(LayerError, match="no_such_module_xyz"):
        _layer("Cls", [(1,)], module="no_such_module_xyz")
    with pytest.raises(LayerError, match=f"'{MODULE}'.*no class 'Nope'"):
        _layer("Nope", [(1,)])
    with pytest.raises(LayerError, match="not a class"):
        _layer("NOT_A_CLASS", [(1,)])
    with pytest.raises(LayerError, match="missing dependency xyz"):
        _layer("Cls", [(1,)], module="caffelike_test_broken")


def test_python_layers_can_be_disabled() -> None:
    with python_layers(False):
        with pytest.raises(LayerError, match="allow_python_layers=False"):
            _layer("SimpleLayer", [(2, 3)])
        with pytest.raises(LayerError):
            check_allowed()
    check_allowed()
    _layer("SimpleLayer", [(2, 3)])


def test_blob_stand_in() -> None:
    b = Blob((2, 3, 4))
    assert (b.num, b.channels, b.height, b.width, b.count) == (2, 3, 4, 1, 24)
    b.data[...] = 1.0
    b.reshape(4, 6)
    assert b.shape == (4, 6) and b.data.sum() == 24.0  # same count keeps the contents
    b.reshape(5)
    assert b.data.sum() == 0.0 and b.diff.shape == (5,)


# --- through the net builder: Caffe's own python/caffe/test/test_python_layer.py ------------------
def _net(tmp_path, text: str, phase: int = caffe_pb2.TRAIN, **kwargs):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return caffelike.Net(str(path), phase, **kwargs)


def _simple_net_text() -> str:
    layers = "".join(
        f"layer {{ type: 'Python' name: '{n}' bottom: '{b}' top: '{n}' "
        f"python_param {{ module: '{MODULE}' layer: 'SimpleLayer' }} }}\n"
        for b, n in (("data", "one"), ("one", "two"), ("two", "three")))
    return ("name: 'pythonnet' force_backward: true\n"
            "input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }\n" + layers)


def test_net_forward_backward_reshape(tmp_path) -> None:
    net = _net(tmp_path, _simple_net_text())
    net.blobs["data"].data[...] = 8
    net.forward()
    assert np.all(net.blobs["three"].data == 10 ** 3 * 8)
    net.blobs["three"].diff[...] = 7
    net.backward()
    assert np.all(net.blobs["data"].diff == 10 ** 3 * 7)
    net.blobs["data"].reshape(4, 4, 4, 4)
    net.forward()
    assert all(blob.data.shape == (4, 4, 4, 4) for blob in net.blobs.values())


def test_net_parameter_layer(tmp_path) -> None:
    net = _net(tmp_path, "name: 'p' force_backward: true\n"
               "input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }\n"
               f"layer {{ type: 'Python' name: 'layer' bottom: 'data' top: 'top' "
               f"python_param {{ module: '{MODULE}' layer: 'ParameterLayer' }} }}\n")
    net.forward()
    net.backward()
    layer = net.layers[list(net._layer_names).index("layer")]
    assert layer.blobs[0].data[0] == 0 and layer.blobs[0].diff[0] == 1
    layer.blobs[0].data[0] += layer.blobs[0].diff[0]
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    layer.blobs[0].data[0] = -1
    net.copy_from(str(weights))
    assert layer.blobs[0].data[0] == 1


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_net_phase(tmp_path, phase: int) -> None:
    net = _net(tmp_path, f"name: 'ph' layer {{ type: 'Python' name: 'layer' top: 'phase' "
               f"python_param {{ module: '{MODULE}' layer: 'PhaseLayer' }} }}", phase)
    assert net.forward()["phase"] == phase


def test_net_refuses_python_layers_when_disabled(tmp_path) -> None:
    with pytest.raises(caffelike.errors.CaffelikeError, match="allow_python_layers=False"):
        _net(tmp_path, _simple_net_text(), allow_python_layers=False)


def test_net_without_fillers_builds_python_layer_normally(tmp_path) -> None:
    # Net(fill=False) first tries a meta-device build; the Python layer refuses it before
    # running user code, so setup runs once, on real arrays.
    net = _net(tmp_path, _simple_net_text(), fill=False)
    net.blobs["data"].data[...] = 2
    net.forward()
    assert np.all(net.blobs["three"].data == 2000)


def test_propagate_down_false_for_a_bottom_without_grad() -> None:
    case = load_case("EuclideanLoss__basic")
    a_np, b_np = case.arrays["in/a"], case.arrays["in/b"]
    layer = _layer("EuclideanLossLayer", [a_np.shape, b_np.shape])
    a = torch.from_numpy(a_np.copy()).requires_grad_(True)
    b = torch.from_numpy(b_np.copy())  # like a label: propagate_down false
    (loss,) = layer(a, b)
    loss.backward(torch.tensor(case.arrays["topdiff/loss"]))
    assert_close(a.grad, case.arrays["bottomdiff/a"], "bottomdiff/a")
    assert b.grad is None


def test_net_with_torch_module_layer(tmp_path) -> None:
    net = _net(tmp_path, "name: 'm' force_backward: true\n"
               "input: 'data' input_shape { dim: 2 dim: 3 }\n"
               f"layer {{ name: 'aff' type: 'Python' bottom: 'data' top: 'y' top: 'sq' "
               f"python_param {{ module: '{MODULE}' layer: 'Affine' param_str: '2.5' }} }}\n")
    assert [b.data.shape for b in net.params["aff"]] == [(), (3,)]
    net.blobs["data"].data[...] = 1
    out = net.forward()
    assert np.all(out["y"] == 2.5) and np.all(out["sq"] == 1)
    net.blobs["y"].diff[...] = 1
    net.blobs["sq"].diff[...] = 0
    net.backward()
    assert float(net.params["aff"][0].diff) == 6.0  # sum of x over 6 ones
    assert np.all(net.params["aff"][1].diff == 2.0)
    assert np.all(net.blobs["data"].diff == 2.5)
