"""``caffe.proto`` shim: ``from caffe.proto import caffe_pb2`` gives caffelike's caffe_pb2."""
from __future__ import annotations

import sys

from caffelike.proto import caffe_pb2  # noqa: F401

sys.modules.setdefault("caffe.proto.caffe_pb2", caffe_pb2)
