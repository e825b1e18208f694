"""Issue 16's Faster R-CNN / R-FCN / PSPNet / DeepLab fields in proto/caffe.proto (slice rcnn).

Numbers: rbgirshick/caffe-fast-rcnn (branch faster-rcnn) roi_pooling_param 8266711,
smooth_l1_loss_param 8266712 and DropoutParameter.scale_train 2; daijifeng001/caffe-rfcn
psroi_pooling_param 10001: all free here, so kept. hszhao/PSPNet's interp_param 143 is our
input_param, and weiliu89/caffe (branch fcn)'s ConvolutionParameter.filter_stride/_h/_w 16/17/18
are our axis/force_nd_im2col/dilation: those take 1520-1523 (prototxt is read by name). DeepLab
v1's (TheLegendAli/DeepLab-Context) hole/hole_h/hole_w are 17/18/19 there: 1524, 1525 and 19 here.
"""
from __future__ import annotations

import pytest
from google.protobuf import descriptor, text_format

from caffelike.proto import caffe_pb2

F = descriptor.FieldDescriptor

# (message, field): (fork's number, ours, type, default or None)
FIELDS = {
    ("LayerParameter", "roi_pooling_param"): (8266711, 8266711, F.TYPE_MESSAGE, None),
    ("LayerParameter", "smooth_l1_loss_param"): (8266712, 8266712, F.TYPE_MESSAGE, None),
    ("LayerParameter", "psroi_pooling_param"): (10001, 10001, F.TYPE_MESSAGE, None),
    ("LayerParameter", "interp_param"): (143, 1520, F.TYPE_MESSAGE, None),
    ("ConvolutionParameter", "filter_stride"): (16, 1521, F.TYPE_UINT32, 1),
    ("ConvolutionParameter", "filter_stride_h"): (17, 1522, F.TYPE_UINT32, None),
    ("ConvolutionParameter", "filter_stride_w"): (18, 1523, F.TYPE_UINT32, None),
    ("ConvolutionParameter", "hole"): (17, 1524, F.TYPE_UINT32, 1),
    ("ConvolutionParameter", "hole_h"): (18, 1525, F.TYPE_UINT32, 1),
    ("ConvolutionParameter", "hole_w"): (19, 19, F.TYPE_UINT32, 1),
    ("DropoutParameter", "scale_train"): (2, 2, F.TYPE_BOOL, True),
    ("ROIPoolingParameter", "pooled_h"): (1, 1, F.TYPE_UINT32, 0),
    ("ROIPoolingParameter", "pooled_w"): (2, 2, F.TYPE_UINT32, 0),
    ("ROIPoolingParameter", "spatial_scale"): (3, 3, F.TYPE_FLOAT, 1.0),
    ("SmoothL1LossParameter", "sigma"): (1, 1, F.TYPE_FLOAT, 1.0),
    ("PSROIPoolingParameter", "spatial_scale"): (1, 1, F.TYPE_FLOAT, None),
    ("PSROIPoolingParameter", "output_dim"): (2, 2, F.TYPE_INT32, None),
    ("PSROIPoolingParameter", "group_size"): (3, 3, F.TYPE_INT32, None),
    ("InterpParameter", "height"): (1, 1, F.TYPE_INT32, 0),
    ("InterpParameter", "width"): (2, 2, F.TYPE_INT32, 0),
    ("InterpParameter", "zoom_factor"): (3, 3, F.TYPE_INT32, 1),
    ("InterpParameter", "shrink_factor"): (4, 4, F.TYPE_INT32, 1),
    ("InterpParameter", "pad_beg"): (5, 5, F.TYPE_INT32, 0),
    ("InterpParameter", "pad_end"): (6, 6, F.TYPE_INT32, 0),
}


@pytest.mark.parametrize("key", FIELDS, ids=lambda k: ".".join(k))
def test_fork_field(key: tuple[str, str]) -> None:
    fork_number, ours, type_, default = FIELDS[key]
    desc = getattr(caffe_pb2, key[0]).DESCRIPTOR
    field = desc.fields_by_name[key[1]]
    assert (field.number, field.type) == (ours, type_)
    if default is not None:
        assert field.has_default_value and field.default_value == pytest.approx(default)
    if fork_number != ours:  # the fork's number belongs to one of BVLC's fields here
        assert desc.fields_by_number[fork_number].name != key[1]
    assert [f.number for f in desc.fields].count(ours) == 1


def test_fork_fields_parse_by_name_and_round_trip() -> None:
    text = """layer { name: "p" type: "Interp" interp_param { zoom_factor: 2 pad_beg: -1 } }
layer { name: "r" type: "ROIPooling" roi_pooling_param { pooled_h: 7 pooled_w: 7 spatial_scale: 0.0625 } }
layer { name: "s" type: "PSROIPooling" psroi_pooling_param { spatial_scale: 0.0625 output_dim: 21 group_size: 7 } }
layer { name: "l" type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 3 } }
layer { name: "c" type: "Convolution" convolution_param { kernel_size: 3 filter_stride: 2 } }
layer { name: "d" type: "Dropout" dropout_param { scale_train: false } }
"""
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert again == net
    assert again.layer[0].interp_param.pad_beg == -1
    assert again.layer[4].convolution_param.filter_stride == 2
    assert again.layer[5].dropout_param.scale_train is False
