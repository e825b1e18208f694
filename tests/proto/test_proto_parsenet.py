"""Issue 16's ParseNet fields in proto/caffe.proto (slice parsenet), weiliu89/caffe branch fcn.

Its LayerParameter.parse_evaluate_param 132 and unpooling_param 133 are our spp_param and
reshape_param, PoolingParameter.bin_size/bin_h 13/14 our round_mode/ceil_mode and
SolverParameter.eval_type 37 our snapshot_format: those take 1580-1583 (prototxt is read by
name); eval_type is the ssd branch's field too, 1565 here. bin_w (15) and the fields inside its own messages keep the fork's numbers.
"""
from __future__ import annotations

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor as F

from caffelike.proto import caffe_pb2

# (message, field) -> fork's number, our number, type, default (None: no default)
FIELDS = {
    ("LayerParameter", "parse_evaluate_param"): (132, 1580, F.TYPE_MESSAGE, None),
    ("LayerParameter", "unpooling_param"): (133, 1581, F.TYPE_MESSAGE, None),
    ("PoolingParameter", "bin_size"): (13, 1582, F.TYPE_UINT32, None),
    ("PoolingParameter", "bin_h"): (14, 1583, F.TYPE_UINT32, None),
    ("PoolingParameter", "bin_w"): (15, 15, F.TYPE_UINT32, None),
    ("SolverParameter", "eval_type"): (37, 1565, F.TYPE_STRING, "classification"),  # shared with the ssd branch (its 41)
    ("UnPoolingParameter", "unpool"): (1, 1, F.TYPE_ENUM, caffe_pb2.UnPoolingParameter.FIXED),
    ("UnPoolingParameter", "out_kernel_size"): (2, 2, F.TYPE_UINT32, None),
    ("UnPoolingParameter", "out_stride"): (3, 3, F.TYPE_UINT32, 1),
    ("UnPoolingParameter", "out_pad"): (4, 4, F.TYPE_UINT32, 0),
    ("UnPoolingParameter", "out_kernel_h"): (5, 5, F.TYPE_UINT32, None),
    ("UnPoolingParameter", "out_kernel_w"): (6, 6, F.TYPE_UINT32, None),
    ("UnPoolingParameter", "out_stride_h"): (7, 7, F.TYPE_UINT32, None),
    ("UnPoolingParameter", "out_stride_w"): (8, 8, F.TYPE_UINT32, None),
    ("UnPoolingParameter", "out_pad_h"): (9, 9, F.TYPE_UINT32, 0),
    ("UnPoolingParameter", "out_pad_w"): (10, 10, F.TYPE_UINT32, 0),
    ("ParseEvaluateParameter", "num_labels"): (1, 1, F.TYPE_INT32, None),
    ("ParseEvaluateParameter", "ignore_label"): (2, 2, F.TYPE_INT32, None),
}


def test_fork_fields_numbers_types_and_defaults() -> None:
    got = {}
    for (message, name), (fork_number, ours, _, _) in FIELDS.items():
        desc = getattr(caffe_pb2, message).DESCRIPTOR
        field = desc.fields_by_name[name]
        got[message, name] = (fork_number, field.number, field.type,
                              field.default_value if field.has_default_value else None)
        if fork_number != ours:  # the fork's number belongs to one of BVLC's fields here
            assert desc.fields_by_number[fork_number].name != name
        assert [f.number for f in desc.fields].count(field.number) == 1
    assert got == FIELDS


def test_unpool_methods_are_the_forks() -> None:
    enum = caffe_pb2.UnPoolingParameter.UnPoolMethod
    assert {name: enum.Value(name) for name in enum.keys()} == {"FIXED": 0, "DIV": 1, "REP": 2}


def test_fork_fields_parse_by_name_and_round_trip() -> None:
    text = """layer { name: "u" type: "UnPooling" unpooling_param { unpool: REP out_kernel_size: 0 out_stride: 0 } }
layer { name: "e" type: "ParseEvaluate" parse_evaluate_param { num_labels: 21 ignore_label: 255 ignore_label: 0 } }
layer { name: "p" type: "Pooling" pooling_param { pool: AVE bin_size: 1 } }
layer { name: "q" type: "Pooling" pooling_param { bin_h: 2 bin_w: 3 } }
"""
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert again == net
    assert again.layer[0].unpooling_param.unpool == caffe_pb2.UnPoolingParameter.REP
    assert list(again.layer[1].parse_evaluate_param.ignore_label) == [255, 0]
    assert again.layer[2].pooling_param.bin_size == 1
    assert again.layer[2].pooling_param.round_mode == caffe_pb2.PoolingParameter.CEIL
    solver = text_format.Parse('eval_type: "segmentation"', caffe_pb2.SolverParameter())
    assert caffe_pb2.SolverParameter.FromString(solver.SerializeToString()).eval_type == "segmentation"
