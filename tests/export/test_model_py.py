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
