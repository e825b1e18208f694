"""The committed example models/mouth/simpleconv3/pytorch/model.py is what the exporter writes
now, and it reads as plain PyTorch (imports torch only, one line per layer)."""
from __future__ import annotations

import ast
import pathlib

import caffelike
from caffelike.export.codegen import generate
from caffelike.export.describe import describe
from caffelike.net import Net

from .conftest import BOOK_DEPLOY

COMMITTED = BOOK_DEPLOY.parent / "pytorch" / "model.py"


def _book_source() -> str:
    return generate(describe(Net(str(BOOK_DEPLOY), caffelike.TEST, fill=False).graph))


def test_committed_model_py_is_current() -> None:
    assert COMMITTED.read_text() == _book_source(), (
        "regenerate: caffelike export -model models/mouth/simpleconv3/deploy.prototxt "
        "-format pytorch -o models/mouth/simpleconv3/pytorch (then delete weights.pth)")


def test_model_py_imports_torch_only_and_has_one_line_per_layer() -> None:
    tree = ast.parse(_book_source())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [a.name for n in imports for a in n.names] == ["torch"]
    (net,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Net"]
    forward = next(f for f in net.body if isinstance(f, ast.FunctionDef) and f.name == "forward")
    deploy_layers = pathlib.Path(BOOK_DEPLOY).read_text().count("layer {") - 1  # less the Input
    assert [a.arg for a in forward.args.args] == ["self", "data"]
    assert len(forward.body) == deploy_layers + 1  # one line per layer, then the return


def test_names_are_sanitised_uniquely_with_the_original_in_a_comment(tmp_path: pathlib.Path) -> None:
    model = tmp_path / "deploy.prototxt"
    model.write_text(
        'layer { name: "in" type: "Input" top: "class" input_param { shape { dim: 1 dim: 2 } } }\n'
        'layer { name: "conv1/dw" type: "ReLU" bottom: "class" top: "a/b" }\n'
        'layer { name: "conv1_dw" type: "Sigmoid" bottom: "a/b" top: "a_b" }\n'
        'layer { name: "forward" type: "TanH" bottom: "a_b" top: "a_b" }\n')
    net = Net(str(model), caffelike.TEST)
    source = generate(describe(net.graph))
    ast.parse(source)
    assert "self.conv1_dw = torch.nn.ReLU()  # conv1/dw" in source
    assert "self.conv1_dw_2 = torch.nn.Sigmoid()  # conv1_dw" in source
    assert "def forward(self, class_):" in source
    assert "a_b_2 = self.conv1_dw_2(a_b)\n        a_b_2 = self.forward_(a_b_2)\n" in source
    assert "return {'a_b': a_b_2}" in source
    assert list(net.to_torch()(__import__("torch").zeros(1, 2))) == ["a_b"]
