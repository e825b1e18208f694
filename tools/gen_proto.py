"""Regenerate caffelike/proto/caffe_pb2.py from proto/caffe.proto.

The generator is pinned (grpcio-tools 1.62.3, protoc for protobuf 4.25.1) so that the
generated module imports on every protobuf runtime from 4.25.1 up to the current 7.x.
Run:  pip install grpcio-tools==1.62.3 && python tools/gen_proto.py [OUT_DIR]
"""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
GENERATOR_VERSION = "1.62.3"


def generate(out_dir: pathlib.Path) -> pathlib.Path:
    """Run protoc on proto/caffe.proto, writing caffe_pb2.py into out_dir."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - environment problem
        raise SystemExit(f"gen_proto: grpcio-tools=={GENERATOR_VERSION} is required ({exc})")
    from importlib.metadata import version

    found = version("grpcio-tools")
    if found != GENERATOR_VERSION:
        raise SystemExit(f"gen_proto: grpcio-tools {found} found, {GENERATOR_VERSION} required")
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}",
                      f"--python_out={out_dir}", str(ROOT / "proto" / "caffe.proto")])
    if rc != 0:
        raise SystemExit(f"gen_proto: protoc failed with code {rc}")
    return out_dir / "caffe_pb2.py"


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "caffelike" / "proto"
    print(generate(target))
