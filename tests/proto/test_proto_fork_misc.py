"""Schema of issue 16's slice misc in proto/caffe.proto, under the forks' own field numbers (none
collides with ours): farmingyard/ShuffleNet's shuffle_channel_param (its README: 164),
eric612/MobileNet-YOLO's reorg_param (149), openvinotoolkit/training_toolbox_caffe's region_param
(commit 2137b63: 214). A .caffemodel written by these forks therefore decodes their params.
"""
from __future__ import annotations

import pytest
from google.protobuf import descriptor, text_format

from caffelike.proto import caffe_pb2

T = descriptor.FieldDescriptor
# (owner, field, number, type or message name, default or None)
FIELDS = [
    ("LayerParameter", "shuffle_channel_param", 164, "ShuffleChannelParameter", None),
    ("LayerParameter", "reorg_param", 149, "ReorgParameter", None),
    ("LayerParameter", "region_param", 214, "RegionParameter", None),
    ("ShuffleChannelParameter", "group", 1, T.TYPE_UINT32, 1),
    ("ReorgParameter", "stride", 1, T.TYPE_UINT32, None),
    ("ReorgParameter", "reverse", 2, T.TYPE_BOOL, False),
    ("RegionParameter", "coords", 1, T.TYPE_INT32, 4),
    ("RegionParameter", "classes", 2, T.TYPE_INT32, 20),
    ("RegionParameter", "num", 3, T.TYPE_INT32, 1),
]


@pytest.mark.parametrize("owner,name,number,kind,default", FIELDS, ids=lambda v: str(v))
def test_fork_field(owner, name, number, kind, default) -> None:
    desc = caffe_pb2.DESCRIPTOR.message_types_by_name[owner]
    field = desc.fields_by_name[name]
    assert field.number == number
    assert [f.number for f in desc.fields].count(number) == 1
    if isinstance(kind, str):
        assert field.message_type.name == kind
    else:
        assert field.type == kind
        assert field.has_default_value == (default is not None)
        if default is not None:
            assert field.default_value == default


def test_messages_hold_only_the_forks_fields() -> None:
    for message, names in (("ShuffleChannelParameter", {"group"}), ("ReorgParameter", {"stride", "reverse"}),
                           ("RegionParameter", {"coords", "classes", "num"})):
        assert set(caffe_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name) == names


def test_fork_layer_params_round_trip_through_a_caffemodel() -> None:
    text = ('layer { name: "s" type: "ShuffleChannel" shuffle_channel_param { group: 3 } }\n'
            'layer { name: "r" type: "Reorg" reorg_param { stride: 2 reverse: true } }\n'
            'layer { name: "y" type: "Region" region_param { classes: 80 num: 5 } }\n')
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert again == net
    assert again.layer[0].shuffle_channel_param.group == 3
    assert again.layer[1].reorg_param.reverse is True and again.layer[1].reorg_param.stride == 2
    assert (again.layer[2].region_param.classes, again.layer[2].region_param.coords) == (80, 4)
