"""Extract field facts from BVLC's own caffe.proto into tests/golden/proto/bvlc_caffe_proto_facts.json.

Run with the pinned generator interpreter (it has protoc and a protobuf runtime):
  mkdir -p bvlc && git -C <a clone of BVLC/caffe> show 9b891540:src/caffe/proto/caffe.proto > bvlc/caffe.proto
  .venv-protoc/bin/python tests/proto/extract_bvlc_facts.py bvlc/caffe.proto OUT.json
(the file must keep the name caffe.proto: protoc names the generated module after it).
The facts come from compiling Caffe's file, not from caffelike's copy.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
import tempfile


def main(proto_path: str, out_path: str) -> None:
    import grpc_tools
    from grpc_tools import protoc

    src = pathlib.Path(proto_path).resolve()
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(["protoc", f"-I{src.parent}", f"-I{include}", f"--python_out={tmp}", str(src)])
        if rc:
            raise SystemExit(f"protoc failed ({rc})")
        spec = importlib.util.spec_from_file_location("bvlc_caffe_pb2", pathlib.Path(tmp) / "caffe_pb2.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    file_desc = module.DESCRIPTOR
    messages, enums = [], []

    def walk(desc, prefix):
        name = prefix + desc.name
        fields = []
        for f in desc.fields:
            fields.append({"name": f.name, "number": f.number, "label": f.label, "type": f.type,
                           "type_name": (f.message_type.full_name if f.message_type else
                                         f.enum_type.full_name if f.enum_type else None),
                           "has_default": f.has_default_value,
                           "default": (f.default_value if f.has_default_value and f.type != f.TYPE_BYTES else None),
                           "packed": bool(f.GetOptions().packed) if f.GetOptions().HasField("packed") else None})
        messages.append({"name": name, "fields": fields})
        for e in desc.enum_types:
            enums.append({"name": name + "." + e.name, "values": {v.name: v.number for v in e.values}})
        for nested in desc.nested_types:
            walk(nested, name + ".")

    for desc in file_desc.message_types_by_name.values():
        walk(desc, "")
    for e in file_desc.enum_types_by_name.values():
        enums.append({"name": e.name, "values": {v.name: v.number for v in e.values}})
    facts = {"provenance": "extracted by tests/proto/extract_bvlc_facts.py from BVLC/caffe "
                           "src/caffe/proto/caffe.proto at commit 9b891540183ddc834a02b2bd81b31afae71b2153 "
                           "(compiled with grpcio-tools 1.62.3)",
             "package": file_desc.package, "messages": messages, "enums": enums}
    pathlib.Path(out_path).write_text(json.dumps(facts, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
