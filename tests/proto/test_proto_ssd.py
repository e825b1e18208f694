"""SSD's schema (weiliu89/caffe branch ssd, src/caffe/proto/caffe.proto) in proto/caffe.proto, issue 16.

The fork's messages keep its field numbers (FORK_MESSAGES, copied from the fork's caffe.proto).
Its LayerParameter fields keep theirs (200-206, free in BVLC); the TransformationParameter and
SolverParameter fields whose numbers BVLC or the book fork already hold are renumbered in the
ssd block 1560-1579 (RENUMBERED), each documented at the field.
"""
from __future__ import annotations

import pathlib

import pytest
from google.protobuf import text_format

from caffelike.proto import caffe_pb2

FORK_MESSAGES = {
    "LabelMapItem": "name=1 label=2 display_name=3",
    "LabelMap": "item=1",
    "Sampler": "min_scale=1 max_scale=2 min_aspect_ratio=3 max_aspect_ratio=4",
    "SampleConstraint": "min_jaccard_overlap=1 max_jaccard_overlap=2 min_sample_coverage=3 max_sample_coverage=4 min_object_coverage=5 max_object_coverage=6",
    "BatchSampler": "use_original_image=1 sampler=2 sample_constraint=3 max_sample=4 max_trials=5",
    "EmitConstraint": "emit_type=1 emit_overlap=2",
    "NormalizedBBox": "xmin=1 ymin=2 xmax=3 ymax=4 label=5 difficult=6 score=7 size=8",
    "Annotation": "instance_id=1 bbox=2",
    "AnnotationGroup": "group_label=1 annotation=2",
    "AnnotatedDatum": "datum=1 type=2 annotation_group=3",
    "ResizeParameter": "prob=1 resize_mode=2 height=3 width=4 height_scale=8 width_scale=9 pad_mode=5 pad_value=6 interp_mode=7",
    "SaltPepperParameter": "fraction=1 value=2",
    "NoiseParameter": "prob=1 hist_eq=2 inverse=3 decolorize=4 gauss_blur=5 jpeg=6 posterize=7 erode=8 saltpepper=9 saltpepper_param=10 clahe=11 convert_to_hsv=12 convert_to_lab=13",
    "DistortionParameter": "brightness_prob=1 brightness_delta=2 contrast_prob=3 contrast_lower=4 contrast_upper=5 hue_prob=6 hue_delta=7 saturation_prob=8 saturation_lower=9 saturation_upper=10 random_order_prob=11",
    "ExpansionParameter": "prob=1 max_expand_ratio=2",
    "AnnotatedDataParameter": "batch_sampler=1 label_map_file=2 anno_type=3",
    "DetectionEvaluateParameter": "num_classes=1 background_label_id=2 overlap_threshold=3 evaluate_difficult_gt=4 name_size_file=5 resize_param=6",
    "NonMaximumSuppressionParameter": "nms_threshold=1 top_k=2 eta=3",
    "SaveOutputParameter": "output_directory=1 output_name_prefix=2 output_format=3 label_map_file=4 name_size_file=5 num_test_image=6 resize_param=7",
    "DetectionOutputParameter": "num_classes=1 share_location=2 background_label_id=3 nms_param=4 save_output_param=5 code_type=6 variance_encoded_in_target=8 keep_top_k=7 confidence_threshold=9 visualize=10 visualize_threshold=11 save_file=12",
    "MultiBoxLossParameter": "loc_loss_type=1 conf_loss_type=2 loc_weight=3 num_classes=4 share_location=5 match_type=6 overlap_threshold=7 use_prior_for_matching=8 background_label_id=9 use_difficult_gt=10 do_neg_mining=11 neg_pos_ratio=12 neg_overlap=13 code_type=14 encode_variance_in_target=16 map_object_to_agnostic=17 ignore_cross_boundary_bbox=18 bp_inside=19 mining_type=20 nms_param=21 sample_size=22 use_prior_for_nms=23",
    "NormalizeParameter": "across_spatial=1 scale_filler=2 channel_shared=3 eps=4",
    "PermuteParameter": "order=1",
    "PriorBoxParameter": "min_size=1 max_size=2 aspect_ratio=3 flip=4 clip=5 variance=6 img_size=7 img_h=8 img_w=9 step=10 step_h=11 step_w=12 offset=13",
}

LAYER_FIELDS = {"annotated_data_param": 200, "multibox_loss_param": 201, "permute_param": 202,
                "prior_box_param": 203, "detection_output_param": 204, "detection_evaluate_param": 205,
                "norm_param": 206}

# message -> field -> (fork's number, ours, the field holding the fork's number here)
RENUMBERED = {
    "TransformationParameter": {"resize_param": (8, 1560, "min_scaling_factor"),
                                "noise_param": (9, 1561, "max_scaling_factor"),
                                "emit_constraint": (10, 1562, "max_rotation_angle"),
                                "distort_param": (13, 1563, "min_side_min"),
                                "expand_param": (14, 1564, "min_contrast")},
    "SolverParameter": {"eval_type": (41, 1565, "layer_wise_reduce"), "ap_version": (42, 1566, "weights")},
}


# Fields another fork adds to an SSD message (ParseNet's fcn branch: fix_scale, its 4, is SSD's eps).
OTHER_FORKS_FIELDS = {"NormalizeParameter": {"fix_scale": "1585"}}


@pytest.mark.parametrize("name", FORK_MESSAGES)
def test_fork_message_keeps_the_forks_numbers(name: str) -> None:
    desc = getattr(caffe_pb2, name).DESCRIPTOR
    expected = dict(item.split("=") for item in FORK_MESSAGES[name].split())
    expected.update(OTHER_FORKS_FIELDS.get(name, {}))
    assert {f.name: str(f.number) for f in desc.fields} == expected


def test_layer_parameter_fields_keep_the_forks_numbers() -> None:
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assert {name: fields[name].number for name in LAYER_FIELDS} == LAYER_FIELDS


@pytest.mark.parametrize("message", RENUMBERED)
def test_colliding_fields_are_renumbered_and_documented(message: str) -> None:
    desc = getattr(caffe_pb2, message).DESCRIPTOR
    text = (pathlib.Path(__file__).resolve().parents[2] / "proto" / "caffe.proto").read_text()
    for name, (fork, ours, holder) in RENUMBERED[message].items():
        assert desc.fields_by_name[name].number == ours
        assert desc.fields_by_number[fork].name == holder
        assert f"= {ours}" in text and f"weiliu89/caffe ssd: field {fork} there (collides with {holder})" in text
    if message == "SolverParameter":  # the fork's 44 is free in BVLC
        assert desc.fields_by_name["show_per_class_result"].number == 44


def test_fork_defaults() -> None:
    p = caffe_pb2.LayerParameter()
    assert p.prior_box_param.flip is True and p.prior_box_param.clip is False
    assert abs(p.prior_box_param.offset - 0.5) < 1e-7
    assert p.detection_output_param.code_type == caffe_pb2.PriorBoxParameter.CORNER
    assert p.detection_output_param.keep_top_k == -1 and p.detection_output_param.share_location
    assert abs(p.detection_output_param.nms_param.nms_threshold - 0.3) < 1e-7
    assert p.detection_output_param.nms_param.eta == 1.0
    assert p.norm_param.across_spatial and p.norm_param.channel_shared
    assert p.transform_param.resize_param.resize_mode == caffe_pb2.ResizeParameter.WARP
    assert caffe_pb2.SolverParameter().ap_version == "Integral"


def test_ssd_fields_parse_by_name_and_round_trip() -> None:
    text = """transform_param { resize_param { prob: 1 resize_mode: WARP height: 300 width: 300
      interp_mode: LINEAR interp_mode: AREA } emit_constraint { emit_type: CENTER }
      distort_param { brightness_prob: 0.5 } expand_param { prob: 0.5 max_expand_ratio: 4 } }
    annotated_data_param { batch_sampler { sampler { min_scale: 0.3 } sample_constraint {
      min_jaccard_overlap: 0.1 } max_sample: 1 max_trials: 50 } label_map_file: "labelmap.prototxt" }"""
    p = text_format.Parse(text, caffe_pb2.LayerParameter())
    assert p.transform_param.resize_param.height == 300
    assert list(p.transform_param.resize_param.interp_mode) == [1, 2]
    assert caffe_pb2.LayerParameter.FromString(p.SerializeToString()) == p
