"""Issue 9, row 5: untrusted files.

* nothing in caffelike unpickles: no pickle/dill/joblib/marshal/shelve loads, no
  ``np.load(..., allow_pickle=True)``, every ``torch.load`` passes ``weights_only=True``;
* a Python layer imports user code as Caffe does (python_layer.hpp: the module named by
  python_param is imported), and ``allow_python_layers=False`` / ``--no-python-layers``
  refuses such nets before importing anything;
* with ``--strict-paths`` an image list entry cannot escape ``root_folder``.
"""
from __future__ import annotations

import ast
import pathlib
import sys

import pytest

from caffelike.errors import CaffelikeError

from .helpers import ROOT, assert_located, edit, layer_line, run_cli

SOURCE = ROOT / "caffelike"
UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"),
              ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("marshal", "load"),
              ("marshal", "loads"), ("shelve", "open"), ("pd", "read_pickle"), ("pandas", "read_pickle")}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                base = func.value
                name = base.id if isinstance(base, ast.Name) else (base.attr if isinstance(base, ast.Attribute) else "")
                yield node, name, func.attr
            elif isinstance(func, ast.Name):
                yield node, "", func.id


def _keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _sources() -> list[pathlib.Path]:
    return [p for p in SOURCE.rglob("*.py") if "proto" not in p.parts or p.name != "caffe_pb2.py"]


def test_nothing_in_caffelike_unpickles():
    problems = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "shelve") for n in names):
                    problems.append(f"{path}:{node.lineno}: imports an unpickler")
        for node, base, attr in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if (base, attr) in UNPICKLERS:
                problems.append(f"{where}: {base}.{attr}")
            if attr == "load" and base in ("np", "numpy"):
                flag = _keyword(node, "allow_pickle")
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                    problems.append(f"{where}: np.load with allow_pickle")
            if attr == "load" and base == "torch":
                flag = _keyword(node, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
    assert problems == []


PY_NET = """name: "py"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
layer {
  name: "user"
  type: "Python"
  bottom: "data"
  top: "out"
  python_param { module: "%s" layer: "Twice" }
}
"""

USER_MODULE = '''
import caffelike as caffe

IMPORTED = True


class Twice(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        pass
'''


@pytest.fixture
def user_layer(tmp_path, monkeypatch):
    """A user module on sys.path and a net naming it; the module name is unique per test."""
    name = f"caffelike_untrusted_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = tmp_path / "py.prototxt"
    net.write_text(PY_NET % name)
    yield name, net
    sys.modules.pop(name, None)


def test_python_layer_imports_user_code_as_caffe_does(user_layer):
    from caffelike.net import Net

    name, path = user_layer
    net = Net(str(path), 1)
    assert sys.modules[name].IMPORTED
    net.blobs["data"].data[...] = [[1.0, -2.0]]
    net.forward()
    assert net.blobs["out"].data.tolist() == [[2.0, -4.0]]


def test_allow_python_layers_false_refuses_before_importing(user_layer):
    from caffelike.net import Net

    name, path = user_layer
    with pytest.raises(CaffelikeError) as info:
        Net(str(path), 1, allow_python_layers=False)
    assert_located(str(info.value), "py.prototxt", layer_line(path, "user"), "user", "Python")
    assert "Python layers are disabled" in str(info.value)
    assert name not in sys.modules


def test_cli_no_python_layers_refuses_the_net(user_layer, tmp_path, capsys, monkeypatch):
    name, path = user_layer
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "time", "-model", str(path), "-iterations", "1", "-no-python-layers")
    assert "Python layers are disabled" in result.error
    assert "layer 'user' (Python)" in result.error
    assert name not in sys.modules


def _escaping_list(image_case: pathlib.Path) -> None:
    outside = image_case / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes((image_case / "img" / "img03_c3.png").read_bytes())
    edit(image_case / "images.txt", "img03_c3.png 3", "../outside/secret.png 3")


def test_list_paths_may_leave_root_folder_by_default(image_case, capsys):
    """Caffe reads root_folder + path verbatim (image_data_layer.cpp), so this trains."""
    from caffelike.cli import main

    _escaping_list(image_case)
    edit(image_case / "solver.prototxt", "max_iter: 30", "max_iter: 1")
    assert main(["train", "-solver", "solver.prototxt"]) == 0


def test_strict_paths_refuses_entries_escaping_root_folder(image_case, capsys):
    _escaping_list(image_case)
    edit(image_case / "solver.prototxt", "max_iter: 30", "max_iter: 1")
    result = run_cli(capsys, "train", "-solver", "solver.prototxt", "-strict-paths")
    assert_located(result.error, "images.txt", 4, "data", "ImageData")
    assert "root_folder" in result.error and "../outside/secret.png" in result.error
