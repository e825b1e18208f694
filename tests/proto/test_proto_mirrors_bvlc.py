"""proto/caffe.proto mirrors BVLC's caffe.proto field for field.

Expected facts: tests/golden/proto/bvlc_caffe_proto_facts.json, extracted from BVLC Caffe's own
src/caffe/proto/caffe.proto at the golden commit (see its README). caffelike may add fields
(the book fork's TransformationParameter extensions) but never change or drop one of Caffe's.
"""
from __future__ import annotations

import json
import math
import pathlib

import pytest

from caffelike.proto import caffe_pb2

FACTS = json.loads((pathlib.Path(__file__).resolve().parents[1] / "golden" / "proto"
                    / "bvlc_caffe_proto_facts.json").read_text())

# caffelike's documented additions (proto/caffe.proto header): the book fork's (Caffe_Long)
# messages and fields, checked field by field in test_proto_caffe_long.py; and the other forks'
# PoolingParameter.ceil_mode (under a free number), checked in test_proto_forks.py, and the
# SegNet/ENet/PSPNet/YOLO ones, checked in test_proto_segnet.py.
ALLOWED_EXTRA_MESSAGES: set[str] = {
    "MarginInnerProductParameter", "KnowledgeDistillationParameter", "LargeMarginInnerProductParameter",
    "ReLU6Parameter", "LabelSpecificRescaleParameter", "LabelSpecificMarginParameter",
    "ChannelScaleParameter", "LabelSpecificAffineParameter", "LabelSpecificHardMarginParameter",
    "LabelSpecificStatisticsParameter", "LabelSpecificAddParameter", "ChannelShuffleParameter",
    "CompactBilinearParameter",
    # issue 16, slice misc (ShuffleNet, MobileNet-YOLO, training_toolbox_caffe)
    "ShuffleChannelParameter", "ReorgParameter", "RegionParameter",
    # SegNet/ENet/PSPNet/YOLO (issue 16): tests/proto/test_proto_segnet.py
    "UpsampleParameter", "BNParameter", "DenseImageDataParameter"}
# issue 16, slice rcnn (checked in test_proto_rcnn_forks.py): caffe-fast-rcnn, caffe-rfcn, PSPNet
# messages; DeepLab/ParseNet's ConvolutionParameter.filter_stride*, caffe-fast-rcnn's
# DropoutParameter.scale_train
ALLOWED_EXTRA_MESSAGES |= {"ROIPoolingParameter", "SmoothL1LossParameter", "PSROIPoolingParameter",
                           "InterpParameter"}
ALLOWED_EXTRA_FIELD_OWNERS = {"TransformationParameter", "LayerParameter", "ImageDataParameter",
                              "MemoryDataParameter", "SoftmaxParameter", "PoolingParameter",
                              "ConvolutionParameter", "DropoutParameter", "LossParameter",
                              "V1LayerParameter", "SolverParameter"}
# enum values added by forks (issue 16): ChenglongChen's V1 BN (its 39 is BVLC's DECONVOLUTION)
ALLOWED_EXTRA_ENUM_VALUES: dict[str, dict[str, int]] = {"V1LayerParameter.LayerType": {"BN": 1500}}
# SSD's fork (weiliu89/caffe ssd), checked against the fork's numbers in test_proto_ssd.py
ALLOWED_EXTRA_MESSAGES |= {
    "LabelMapItem", "LabelMap", "Sampler", "SampleConstraint", "BatchSampler", "EmitConstraint",
    "NormalizedBBox", "Annotation", "AnnotationGroup", "AnnotatedDatum",
    "ResizeParameter", "SaltPepperParameter", "NoiseParameter", "DistortionParameter",
    "ExpansionParameter", "AnnotatedDataParameter", "DetectionEvaluateParameter",
    "NonMaximumSuppressionParameter", "SaveOutputParameter", "DetectionOutputParameter",
    "MultiBoxLossParameter", "NormalizeParameter", "PermuteParameter", "PriorBoxParameter"}
# issue 16, slice parsenet (checked in test_proto_parsenet.py): weiliu89/caffe branch fcn's
# UnPooling/ParseEvaluate messages, PoolingParameter bins, SolverParameter.eval_type
ALLOWED_EXTRA_MESSAGES |= {"UnPoolingParameter", "ParseEvaluateParameter"}


def _descriptor(full_name: str):
    parts = full_name.split(".")
    desc = caffe_pb2.DESCRIPTOR.message_types_by_name[parts[0]]
    for part in parts[1:]:
        desc = desc.nested_types_by_name[part]
    return desc


def _label(field) -> int:
    """descriptor.proto's label number (1 optional, 2 required, 3 repeated) on any protobuf."""
    if hasattr(field, "label"):  # protobuf < 7
        return field.label
    if field.is_repeated:
        return 3
    return 2 if getattr(field, "is_required", False) else 1


def _same_default(expected, actual) -> bool:
    if isinstance(expected, float) and isinstance(actual, float):
        return (math.isnan(expected) and math.isnan(actual)) or expected == actual
    return expected == actual


def test_package_is_caffe() -> None:
    assert caffe_pb2.DESCRIPTOR.package == FACTS["package"] == "caffe"


@pytest.mark.parametrize("message", FACTS["messages"], ids=lambda m: m["name"])
def test_message_fields_match_bvlc(message: dict) -> None:
    desc = _descriptor(message["name"])
    problems = []
    for want in message["fields"]:
        got = desc.fields_by_name.get(want["name"])
        if got is None:
            problems.append(f"{want['name']}: missing")
            continue
        for key, actual in (("number", got.number), ("label", _label(got)), ("type", got.type),
                            ("has_default", got.has_default_value)):
            if want[key] != actual:
                problems.append(f"{want['name']}.{key}: {actual} != BVLC {want[key]}")
        type_name = (got.message_type.full_name if got.message_type else
                     got.enum_type.full_name if got.enum_type else None)
        if type_name != want["type_name"]:
            problems.append(f"{want['name']}.type_name: {type_name} != BVLC {want['type_name']}")
        if want["has_default"] and not _same_default(want["default"], got.default_value):
            problems.append(f"{want['name']}.default: {got.default_value!r} != BVLC {want['default']!r}")
        packed = got.GetOptions().packed if got.GetOptions().HasField("packed") else None
        if packed != want["packed"]:
            problems.append(f"{want['name']}.packed: {packed} != BVLC {want['packed']}")
    wanted = {f["name"] for f in message["fields"]}
    extra = [f.name for f in desc.fields if f.name not in wanted]
    if extra and message["name"] not in ALLOWED_EXTRA_FIELD_OWNERS:
        problems.append(f"fields not in BVLC: {extra}")
    bvlc_numbers = {f["number"] for f in message["fields"]}
    clashes = [f.name for f in desc.fields if f.name not in wanted and f.number in bvlc_numbers]
    if clashes:
        problems.append(f"added fields reuse BVLC field numbers: {clashes}")
    assert not problems, f"{message['name']}: " + "; ".join(problems)


def test_no_unexpected_messages() -> None:
    bvlc = {m["name"] for m in FACTS["messages"]}
    ours: set[str] = set()

    def walk(desc, prefix: str) -> None:
        ours.add(prefix + desc.name)
        for nested in desc.nested_types:
            walk(nested, prefix + desc.name + ".")

    for desc in caffe_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(desc, "")
    assert ours - bvlc <= ALLOWED_EXTRA_MESSAGES
    assert bvlc - ours == set()


@pytest.mark.parametrize("enum", FACTS["enums"], ids=lambda e: e["name"])
def test_enum_values_match_bvlc(enum: dict) -> None:
    parts = enum["name"].split(".")
    if len(parts) == 1:
        desc = caffe_pb2.DESCRIPTOR.enum_types_by_name[parts[0]]
    else:
        desc = _descriptor(".".join(parts[:-1])).enum_types_by_name[parts[-1]]
    extra = ALLOWED_EXTRA_ENUM_VALUES.get(enum["name"], {})
    assert {v.name: v.number for v in desc.values} == {**enum["values"], **extra}
    assert not set(extra.values()) & set(enum["values"].values())
