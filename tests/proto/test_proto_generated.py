"""caffelike/proto/caffe_pb2.py is exactly what the pinned generator makes from proto/caffe.proto."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys


ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_GENERATOR = ROOT / ".venv-protoc" / "bin" / "python"


def _generator() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CAFFELIKE_PROTOC_PYTHON", DEFAULT_GENERATOR))


def test_caffe_pb2_matches_pinned_generator(tmp_path: pathlib.Path) -> None:
    generator = _generator()
    assert generator.exists(), (f"pinned protoc interpreter {generator} is missing: `make install` "
                                "creates it (or set CAFFELIKE_PROTOC_PYTHON to one with grpcio-tools==1.62.3)")
    result = subprocess.run([str(generator), str(ROOT / "tools" / "gen_proto.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    fresh = (tmp_path / "caffe_pb2.py").read_text()
    committed = (ROOT / "caffelike" / "proto" / "caffe_pb2.py").read_text()
    assert fresh == committed, ("caffelike/proto/caffe_pb2.py is stale: regenerate it with "
                                "`.venv-protoc/bin/python tools/gen_proto.py`")


def test_generated_module_imports_on_this_runtime() -> None:
    code = "from caffelike.proto import caffe_pb2; caffe_pb2.NetParameter(name='x').SerializeToString()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
