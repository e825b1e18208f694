"""proto/caffe.proto carries the book author's fork (longpeng2008/Caffe_Long, commit ecdb08d)
under the fork's own names, field numbers, types and defaults.

FORK_FIELDS is transcribed from the fork's src/caffe/proto/caffe.proto (owner message, field,
number, type, default as written there). One deliberate difference: deformed_resize_th
defaults to 0.5 (the book's text) instead of the fork's 2 (README, "Schema").
"""
from __future__ import annotations

import pathlib

import pytest
from google.protobuf import descriptor, text_format

from caffelike.proto import caffe_pb2

# (message, field, number, type, default) from Caffe_Long's caffe.proto
FORK_FIELDS = [
    ('LayerParameter', 'knowledge_distillation_param', 1401, 'KnowledgeDistillationParameter', None),
    ('LayerParameter', 'largemargin_inner_product_param', 1402, 'LargeMarginInnerProductParameter', None),
    ('LayerParameter', 'margin_inner_product_param', 1400, 'MarginInnerProductParameter', None),
    ('LayerParameter', 'relu6_param', 1403, 'ReLUParameter', None),
    ('LayerParameter', 'label_specific_rescale_param', 1404, 'LabelSpecificRescaleParameter', None),
    ('LayerParameter', 'label_specific_margin_param', 1405, 'LabelSpecificMarginParameter', None),
    ('LayerParameter', 'label_specific_affine_param', 1406, 'LabelSpecificAffineParameter', None),
    ('LayerParameter', 'label_specific_hard_margin_param', 1407, 'LabelSpecificHardMarginParameter', None),
    ('LayerParameter', 'label_specific_add_param', 1408, 'LabelSpecificAddParameter', None),
    ('LayerParameter', 'channel_shuffle_param', 1409, 'ChannelShuffleParameter', None),
    ('LayerParameter', 'compact_bilinear_param', 1410, 'CompactBilinearParameter', None),
    ('TransformationParameter', 'min_scaling_factor', 8, 'float', '0.75'),
    ('TransformationParameter', 'max_scaling_factor', 9, 'float', '1.50'),
    ('TransformationParameter', 'max_rotation_angle', 10, 'uint32', '0'),
    ('TransformationParameter', 'contrast_brightness_adjustment', 11, 'bool', 'false'),
    ('TransformationParameter', 'smooth_filtering', 12, 'bool', 'false'),
    ('TransformationParameter', 'min_contrast', 14, 'float', '0.8'),
    ('TransformationParameter', 'max_contrast', 15, 'float', '1.2'),
    ('TransformationParameter', 'max_brightness_shift', 16, 'uint32', '5'),
    ('TransformationParameter', 'max_smooth', 17, 'float', '6'),
    ('TransformationParameter', 'max_color_shift', 20, 'uint32', '0'),
    ('TransformationParameter', 'min_side_min', 13, 'uint32', '0'),
    ('TransformationParameter', 'min_side_max', 21, 'uint32', '0'),
    ('TransformationParameter', 'min_side', 22, 'uint32', '0'),
    ('TransformationParameter', 'apply_probability', 18, 'float', '0.5'),
    ('TransformationParameter', 'debug_params', 19, 'bool', 'false'),
    ('TransformationParameter', 'use_deformed_resize', 23, 'bool', 'false'),
    ('TransformationParameter', 'deformed_resize_th', 24, 'float', '2'),
    ('TransformationParameter', 'crop_h', 25, 'uint32', '0'),
    ('TransformationParameter', 'crop_w', 26, 'uint32', '0'),
    ('ImageDataParameter', 'label_size', 13, 'uint32', '1'),
    ('MemoryDataParameter', 'label_size', 5, 'uint32', '1'),
    ('ReLU6Parameter', 'negative_slope', 1, 'float', '0'),
    ('SoftmaxParameter', 'pos_mult', 3, 'float', '1'),
    ('SoftmaxParameter', 'pos_cid', 4, 'int32', '1'),
    ('KnowledgeDistillationParameter', 'temperature', 1, 'float', '1'),
    ('LargeMarginInnerProductParameter', 'num_output', 1, 'uint32', None),
    ('LargeMarginInnerProductParameter', 'type', 2, 'LargeMarginType', 'SINGLE'),
    ('LargeMarginInnerProductParameter', 'weight_filler', 3, 'FillerParameter', None),
    ('LargeMarginInnerProductParameter', 'axis', 4, 'int32', '1'),
    ('LargeMarginInnerProductParameter', 'base', 5, 'float', '1'),
    ('LargeMarginInnerProductParameter', 'gamma', 6, 'float', '0'),
    ('LargeMarginInnerProductParameter', 'power', 7, 'float', '1'),
    ('LargeMarginInnerProductParameter', 'iteration', 8, 'int32', '0'),
    ('LargeMarginInnerProductParameter', 'lambda_min', 9, 'float', '0'),
    ('MarginInnerProductParameter', 'num_output', 1, 'uint32', None),
    ('MarginInnerProductParameter', 'type', 2, 'MarginType', 'SINGLE'),
    ('MarginInnerProductParameter', 'weight_filler', 3, 'FillerParameter', None),
    ('MarginInnerProductParameter', 'axis', 4, 'int32', '1'),
    ('MarginInnerProductParameter', 'base', 5, 'float', '1'),
    ('MarginInnerProductParameter', 'gamma', 6, 'float', '0'),
    ('MarginInnerProductParameter', 'power', 7, 'float', '1'),
    ('MarginInnerProductParameter', 'iteration', 8, 'int32', '0'),
    ('MarginInnerProductParameter', 'lambda_min', 9, 'float', '0'),
    ('LabelSpecificRescaleParameter', 'positive_weight', 1, 'float', '1.0'),
    ('LabelSpecificRescaleParameter', 'negative_weight', 2, 'float', '1.0'),
    ('LabelSpecificRescaleParameter', 'positive_lower_bound', 3, 'float', '0.0'),
    ('LabelSpecificRescaleParameter', 'negative_upper_bound', 4, 'float', '0.0'),
    ('LabelSpecificRescaleParameter', 'rescale_test', 5, 'bool', 'false'),
    ('LabelSpecificRescaleParameter', 'for_ip', 6, 'bool', 'false'),
    ('LabelSpecificRescaleParameter', 'positive_weight_base', 7, 'float', '0.0'),
    ('LabelSpecificRescaleParameter', 'gamma', 8, 'float', '0.0'),
    ('LabelSpecificRescaleParameter', 'power', 9, 'float', '1.0'),
    ('LabelSpecificRescaleParameter', 'positive_weight_min', 10, 'float', '0.0'),
    ('LabelSpecificRescaleParameter', 'positive_weight_max', 11, 'float', '0.0'),
    ('LabelSpecificRescaleParameter', 'iteration', 12, 'uint32', '0'),
    ('LabelSpecificRescaleParameter', 'bias_fix', 13, 'bool', 'false'),
    ('LabelSpecificRescaleParameter', 'power_on_positive', 14, 'bool', 'false'),
    ('LabelSpecificMarginParameter', 'type', 9, 'MarginType', 'HARD'),
    ('LabelSpecificMarginParameter', 'margin_base', 1, 'float', '0.0'),
    ('LabelSpecificMarginParameter', 'margin_max', 2, 'float', '10.0'),
    ('LabelSpecificMarginParameter', 'power', 3, 'float', '1.0'),
    ('LabelSpecificMarginParameter', 'gamma', 4, 'float', '1.0'),
    ('LabelSpecificMarginParameter', 'iteration', 5, 'int32', '0'),
    ('LabelSpecificMarginParameter', 'reset_margin', 6, 'bool', 'false'),
    ('LabelSpecificMarginParameter', 'margin_on_test', 7, 'bool', 'false'),
    ('LabelSpecificMarginParameter', 'auto_tune', 8, 'bool', 'false'),
    ('ChannelScaleParameter', 'do_forward', 1, 'bool', 'true'),
    ('ChannelScaleParameter', 'do_backward_feature', 2, 'bool', 'true'),
    ('ChannelScaleParameter', 'do_backward_scale', 3, 'bool', 'true'),
    ('ChannelScaleParameter', 'global_scale', 4, 'bool', 'false'),
    ('ChannelScaleParameter', 'max_global_scale', 5, 'float', '1000.0'),
    ('ChannelScaleParameter', 'min_global_scale', 6, 'float', '0.0'),
    ('ChannelScaleParameter', 'init_global_scale', 7, 'float', '1.0'),
    ('LabelSpecificAffineParameter', 'scale_base', 1, 'float', '1.0'),
    ('LabelSpecificAffineParameter', 'scale_gamma', 2, 'float', '0.0'),
    ('LabelSpecificAffineParameter', 'scale_power', 3, 'float', '1.0'),
    ('LabelSpecificAffineParameter', 'scale_max', 4, 'float', '1.0'),
    ('LabelSpecificAffineParameter', 'transform_test', 5, 'bool', 'false'),
    ('LabelSpecificAffineParameter', 'iteration', 6, 'uint32', '0'),
    ('LabelSpecificAffineParameter', 'bias_base', 7, 'float', '0.0'),
    ('LabelSpecificAffineParameter', 'bias_gamma', 8, 'float', '0.0'),
    ('LabelSpecificAffineParameter', 'bias_power', 9, 'float', '1.0'),
    ('LabelSpecificAffineParameter', 'bias_max', 10, 'float', '0.0'),
    ('LabelSpecificAffineParameter', 'power_base', 11, 'float', '1.0'),
    ('LabelSpecificAffineParameter', 'power_gamma', 12, 'float', '0.0'),
    ('LabelSpecificAffineParameter', 'power_power', 13, 'float', '-1.0'),
    ('LabelSpecificAffineParameter', 'power_min', 14, 'float', '0.5'),
    ('LabelSpecificAffineParameter', 'auto_tune', 15, 'bool', 'false'),
    ('LabelSpecificAffineParameter', 'reset', 16, 'bool', 'false'),
    ('LabelSpecificHardMarginParameter', 'positive_weight', 1, 'float', '0.5'),
    ('LabelSpecificStatisticsParameter', 'scale_for_angle', 1, 'bool', 'true'),
    ('LabelSpecificStatisticsParameter', 'scale_factor', 2, 'float', '30.0'),
    ('LabelSpecificAddParameter', 'bias', 1, 'float', '0.0'),
    ('LabelSpecificAddParameter', 'transform_test', 2, 'bool', 'false'),
    ('LabelSpecificAddParameter', 'bias_base', 3, 'float', '0.0'),
    ('LabelSpecificAddParameter', 'bias_gamma', 4, 'float', '0.0'),
    ('LabelSpecificAddParameter', 'bias_power', 5, 'float', '1.0'),
    ('LabelSpecificAddParameter', 'bias_min', 6, 'float', '0.0'),
    ('LabelSpecificAddParameter', 'bias_max', 7, 'float', '0.0'),
    ('LabelSpecificAddParameter', 'iteration', 8, 'uint32', '0'),
    ('ChannelShuffleParameter', 'shuffle_pattern', 1, 'int32', '1'),
    ('ChannelShuffleParameter', 'shuffle_channel_num', 2, 'int32', '1'),
    ('ChannelShuffleParameter', 'group', 3, 'uint32', '1'),
    ('CompactBilinearParameter', 'num_output', 1, 'uint32', None),
    ('CompactBilinearParameter', 'sum_pool', 2, 'bool', 'true'),
]

BOOK_DEFAULTS = {("TransformationParameter", "deformed_resize_th"): 0.5}

_SCALARS = {
    "float": descriptor.FieldDescriptor.TYPE_FLOAT, "bool": descriptor.FieldDescriptor.TYPE_BOOL,
    "int32": descriptor.FieldDescriptor.TYPE_INT32, "uint32": descriptor.FieldDescriptor.TYPE_UINT32,
}


def _parse_default(field: descriptor.FieldDescriptor, text: str):
    if field.type == descriptor.FieldDescriptor.TYPE_BOOL:
        return text == "true"
    if field.type == descriptor.FieldDescriptor.TYPE_FLOAT:
        return float(text)
    if field.type == descriptor.FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_name[text].number
    return int(text)


@pytest.mark.parametrize("owner,name,number,type_name,default", FORK_FIELDS,
                         ids=[f"{r[0]}.{r[1]}" for r in FORK_FIELDS])
def test_fork_field_has_the_forks_number_type_and_default(owner, name, number, type_name, default) -> None:
    desc = caffe_pb2.DESCRIPTOR.message_types_by_name[owner]
    field = desc.fields_by_name.get(name)
    assert field is not None, f"{owner}.{name} missing"
    assert field.number == number
    if type_name in _SCALARS:
        assert field.type == _SCALARS[type_name]
    else:
        named = field.message_type or field.enum_type
        assert named is not None and named.name == type_name
    if (owner, name) in BOOK_DEFAULTS:
        assert field.default_value == pytest.approx(BOOK_DEFAULTS[(owner, name)])
    elif default is not None:
        assert field.has_default_value
        want = _parse_default(field, default)
        if isinstance(want, float):
            want = pytest.approx(want)
        assert field.default_value == want
    else:
        assert not field.has_default_value


def test_fork_enum_values() -> None:
    for owner in ("MarginInnerProductParameter", "LargeMarginInnerProductParameter"):
        enum = caffe_pb2.DESCRIPTOR.message_types_by_name[owner].enum_types[0]
        assert {v.name: v.number for v in enum.values} == {"SINGLE": 0, "DOUBLE": 1, "TRIPLE": 2, "QUADRUPLE": 3}
    enum = caffe_pb2.LabelSpecificMarginParameter.DESCRIPTOR.enum_types_by_name["MarginType"]
    assert {v.name: v.number for v in enum.values} == {"HARD": 0, "SOFT": 1}


def test_a_caffemodel_written_by_the_fork_reads_with_its_layer_params() -> None:
    """weights.caffemodel of a golden case was written by Caffe_Long's net.save()."""
    case = (pathlib.Path(__file__).resolve().parents[1] / "golden" / "caffe_long" / "layers"
            / "MarginInnerProduct__quadruple_it1000")
    net = caffe_pb2.NetParameter()
    net.ParseFromString((case / "weights.caffemodel").read_bytes())
    text = caffe_pb2.NetParameter()
    text_format.Parse((case / "net.prototxt").read_text(), text)
    (saved,) = [lp for lp in net.layer if lp.type == "MarginInnerProduct"]
    (written,) = [lp for lp in text.layer if lp.type == "MarginInnerProduct"]
    assert saved.margin_inner_product_param == written.margin_inner_product_param
    assert saved.margin_inner_product_param.type == caffe_pb2.MarginInnerProductParameter.QUADRUPLE
    assert list(saved.blobs[0].shape.dim) == [6, 8]
