"""Fields of Caffe forks other than the book's (issue 16) in proto/caffe.proto.

PoolingParameter.ceil_mode comes from BVLC/caffe PR 3057 as OpenCV's opencv-caffe.proto and the
ResNet/DenseNet ports (shicai/DenseNet-Caffe) use it: ``optional bool ceil_mode = 13
[default = true]``. 13 is BVLC's round_mode, so our schema numbers it 14 (prototxt is read by
name); the mapping is documented at the field in proto/caffe.proto.
"""
from __future__ import annotations

from google.protobuf import descriptor, text_format

from caffelike.proto import caffe_pb2

# (field, fork's number, our number)
FORK_NUMBER_MAP = {"ceil_mode": (13, 14)}


def test_ceil_mode_is_a_bool_defaulting_to_true_under_a_free_number() -> None:
    desc = caffe_pb2.PoolingParameter.DESCRIPTOR
    field = desc.fields_by_name["ceil_mode"]
    fork_number, ours = FORK_NUMBER_MAP["ceil_mode"]
    assert field.number == ours
    assert field.type == descriptor.FieldDescriptor.TYPE_BOOL
    assert field.has_default_value and field.default_value is True
    # the fork's own number is taken by BVLC's round_mode, which keeps it unchanged
    assert desc.fields_by_number[fork_number].name == "round_mode"
    assert [f.number for f in desc.fields].count(ours) == 1


def test_only_ceil_mode_and_parsenets_bins_are_added_to_pooling_parameter() -> None:
    names = {f.name for f in caffe_pb2.PoolingParameter.DESCRIPTOR.fields}
    assert names == {"pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w", "stride",
                     "stride_h", "stride_w", "engine", "global_pooling", "round_mode", "ceil_mode",
                     "bin_size", "bin_h", "bin_w"}  # bins: test_proto_parsenet.py


def test_ceil_mode_parses_and_round_trips_by_name() -> None:
    p = text_format.Parse("kernel_size: 3 stride: 2 ceil_mode: false", caffe_pb2.PoolingParameter())
    assert p.HasField("ceil_mode") and p.ceil_mode is False
    assert p.round_mode == caffe_pb2.PoolingParameter.CEIL
    again = caffe_pb2.PoolingParameter.FromString(p.SerializeToString())
    assert again == p and "ceil_mode: false" in text_format.MessageToString(again)
    assert caffe_pb2.PoolingParameter().ceil_mode is True
