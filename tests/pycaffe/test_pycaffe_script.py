"""Runs pycaffe_script.py (plain ``import caffe`` through the opt-in alias) against real Caffe's
LeNet outputs (tests/golden/nets/lenet), and checks the alias never shadows a real Caffe."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import caffelike.compat as compat

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOLDEN = ROOT / "tests" / "golden" / "nets" / "lenet"


def _env(*paths: str) -> dict[str, str]:
    env = dict(os.environ, GLOG_minloglevel="2")
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_pycaffe_script_runs_every_name(tmp_path: pathlib.Path) -> None:
    res = subprocess.run([sys.executable, str(HERE / "pycaffe_script.py"), str(GOLDEN), str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env=_env(compat.alias_path()))
    assert res.returncode == 0, res.stderr[-4000:]
    done = res.stdout.split("OK ", 1)[1].split()
    for name in ("Net(file,", "blobs", "params", "forward_all", "forward_backward_all", "set_input_arrays",
                 "save_hdf5", "load_hdf5", "share_with", "copy_from", "Classifier", "NetSpec", "Layer",
                 "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
                 "AdamSolver", "get_solver", "restore", "snapshot", "layer_type_list", "set_device"):
        assert name in done


def test_alias_imports(tmp_path: pathlib.Path) -> None:
    code = ("import caffe\nfrom caffe.proto import caffe_pb2\nimport caffe.proto.caffe_pb2 as pb\n"
            "from caffe import layers as L, params as P\nimport caffe.io\n"
            "import caffelike.proto.caffe_pb2 as ours\n"
            "assert caffe_pb2 is pb is ours and P.Pooling.MAX == ours.PoolingParameter.MAX\n"
            "assert caffe.io.Transformer is __import__('caffelike').io.Transformer\n"
            "assert callable(L.Convolution) and caffe.TEST == 1\nprint('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env(compat.alias_path()), cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_install_alias_in_process(tmp_path: pathlib.Path) -> None:
    code = ("import sys, caffelike.compat as c\nassert 'caffe' not in sys.modules\n"
            "assert c.install_caffe_alias() is True\nimport caffe\nfrom caffe.proto import caffe_pb2\n"
            "assert caffe.__caffelike_alias__ and caffe.NetSpec\nprint('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env(), cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_never_shadows_a_real_caffe(tmp_path: pathlib.Path) -> None:
    fake = tmp_path / "site" / "caffe"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("REAL = True\n")
    code = ("import caffelike.compat as c\nassert c.real_caffe_present()\n"
            "assert c.install_caffe_alias() is False\nimport caffe\nassert caffe.REAL\n"
            "assert c.install_caffe_alias(force=True) is True\nimport sys\n"
            "assert sys.modules['caffe'].__caffelike_alias__\nprint('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env(str(tmp_path / "site")), cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
    assert "not aliasing" in res.stderr


def test_plain_import_without_alias_is_untouched(tmp_path: pathlib.Path) -> None:
    res = subprocess.run([sys.executable, "-c", "import caffelike, sys; import caffelike.compat;"
                          "print('caffe' in sys.modules)"], capture_output=True, text=True, timeout=60,
                         env=_env(), cwd=tmp_path)
    assert res.stdout.strip() == "False"
