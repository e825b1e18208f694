"""The net package's internal contracts (issue 13): a frozen plan, per-type facts on the layer
classes, each file read once, and no module outside ``caffelike/net/`` touching a private member
of ``Net`` or ``NetGraph``."""
from __future__ import annotations

import ast
import dataclasses
import textwrap
from pathlib import Path

import pytest

import caffelike
from caffelike.errors import CaffelikeError
from caffelike.layers import LAYERS
from caffelike.net import Net, NetGraph

ROOT = Path(__file__).resolve().parents[2]

NET = textwrap.dedent("""\
    name: "tiny"
    layer { name: "data" type: "Input" top: "data" top: "label"
            input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
            inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
""")


def test_the_plan_is_frozen(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    net = Net(str(path), caffelike.TRAIN)
    assert isinstance(net.plan.layers, tuple) and isinstance(net.graph, NetGraph)
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.plan.layers[1].need_backward = False  # type: ignore[misc]
    assert [lay.need_backward for lay in net.plan.layers] == [False, True, True]


def test_force_backward_rules_are_facts_of_the_layer_classes():
    """Caffe's AllowForceBackward overrides, each on its class (layer_*.hpp)."""
    rule = {name: LAYERS.get(name).cls.allow_force_backward for name in
            ("Convolution", "SoftmaxWithLoss", "EuclideanLoss", "ContrastiveLoss", "LSTMUnit", "LSTM", "RNN")}
    assert rule["Convolution"](0) and rule["Convolution"](1)
    assert rule["SoftmaxWithLoss"](0) and not rule["SoftmaxWithLoss"](1)
    assert rule["EuclideanLoss"](1)
    assert rule["ContrastiveLoss"](1) and not rule["ContrastiveLoss"](2)
    assert not rule["LSTMUnit"](2) and not rule["LSTM"](1) and not rule["RNN"](1)


def test_batchnorm_refuses_learnable_statistics(tmp_path):
    """Caffe's BatchNormLayer CHECKs lr_mult == 0 for a param spec it is given."""
    path = tmp_path / "bn.prototxt"
    path.write_text(textwrap.dedent("""\
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" param { lr_mult: 1 } }
    """))
    with pytest.raises(CaffelikeError, match="lr_mult"):
        Net(str(path), caffelike.TRAIN)


def test_a_solver_reads_each_net_file_once(tmp_path, monkeypatch):
    net = tmp_path / "net.prototxt"
    net.write_text(NET)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}"\ntest_iter: 1\ntest_interval: 100\ntest_iter: 1\n'
                      'test_state { stage: "a" } test_state { stage: "b" }\n'
                      'base_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\nsnapshot_after_train: false\n')
    import caffelike.io as cio

    reads: list[str] = []
    real = cio.read_net

    def counting(path, *args, **kwargs):
        reads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cio, "read_net", counting)
    s = caffelike.get_solver(str(solver))
    assert len(s.test_nets) == 2
    assert reads == [str(net)], "the train net and both test nets come from one read of the file"


# pycaffe's own API spells these with an underscore (caffe/pycaffe.py): public for users.
PYCAFFE_NAMES = {"_layer_names", "_blob_names", "_set_input_arrays", "_inputs", "_outputs"}


def _private_names() -> set[str]:
    """Private attributes and methods defined by Net and NetGraph (pycaffe's underscored API aside)."""
    names: set[str] = set()
    for module in ("pycaffe", "graph"):
        tree = ast.parse((ROOT / "caffelike" / "net" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("_") and not node.name.startswith("__"):
                names.add(node.name)
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                names.add(node.attr)
    return names - PYCAFFE_NAMES


def test_no_module_outside_the_net_package_reads_its_private_members():
    private = _private_names()
    offenders = []
    for top in ("caffelike", "bench"):
        for path in (ROOT / top).rglob("*.py"):
            if path.parent == ROOT / "caffelike" / "net":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Attribute) and node.attr in private
                        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert not offenders, "private members of Net/NetGraph used outside caffelike/net/:\n" + "\n".join(offenders)


def test_the_training_pass_honours_torch_module_hooks(tmp_path):
    # The run loop calls a layer's forward itself when no hook is set: a hook set on a layer,
    # or globally, must still be called (torch.nn.Module's contract).
    import torch

    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    net = Net(str(path), caffelike.TRAIN)
    module = next(m for lay, m in net.graph.pairs() if lay.name == "ip")
    seen = []
    inputs = {"data": torch.ones(2, 3), "label": torch.zeros(2)}
    handles = [module.register_forward_pre_hook(lambda m, args: seen.append("pre")),
               module.register_forward_hook(lambda m, args, out: seen.append("post"))]
    net.run(inputs)
    assert seen == ["pre", "post"]
    for handle in handles:
        handle.remove()
    seen.clear()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, args, out: seen.append(type(m).__name__))
    try:
        net.run(inputs)
    finally:
        handle.remove()
    assert "InnerProduct" in seen and "SoftmaxWithLoss" in seen
    seen.clear()
    net.run(inputs)
    assert seen == []
