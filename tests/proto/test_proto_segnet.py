"""The SegNet/ENet/PSPNet/YOLO/ChenglongChen fork fields of proto/caffe.proto (issue 16, slice segnet).

Each field keeps its fork's number unless that number is taken in our schema; then it has a
number of the block 1500-1519 and proto/caffe.proto names the fork's number at the field.
Fork numbers from the forks' own caffe.proto: alexgkendall/caffe-segnet, TimoSaemann/caffe-enet,
hszhao/PSPNet, eric612/MobileNet-YOLO, ChenglongChen/batch_normalization.
"""
from __future__ import annotations

import pytest
from google.protobuf import text_format

from caffelike.proto import caffe_pb2

# message, field -> (our number, {fork: its number}); a differing number means a collision
NUMBERS = {
    ("LayerParameter", "bn_param"): (45, {"caffe-segnet": 45, "caffe-enet": 45, "PSPNet": 152}),
    ("LayerParameter", "dense_image_data_param"): (46, {"caffe-segnet": 138, "caffe-enet": 46}),
    ("LayerParameter", "upsample_param"): (150, {"caffe-segnet": 137, "caffe-enet": 147, "MobileNet-YOLO": 150}),
    ("V1LayerParameter", "bn_param"): (1501, {"batch_normalization": 41}),
    ("BNParameter", "scale_filler"): (1, {"caffe-segnet": 1}),
    ("BNParameter", "shift_filler"): (2, {"caffe-segnet": 2}),
    ("BNParameter", "bn_mode"): (3, {"caffe-segnet": 3}),
    ("BNParameter", "slope_filler"): (1502, {"PSPNet": 1}),
    ("BNParameter", "bias_filler"): (1503, {"PSPNet": 2}),
    ("BNParameter", "momentum"): (1504, {"PSPNet": 3}),
    ("BNParameter", "eps"): (4, {"PSPNet": 4}),
    ("BNParameter", "frozen"): (5, {"PSPNet": 5}),
    ("BNParameter", "engine"): (6, {"PSPNet": 6}),
    ("LossParameter", "weight_by_label_freqs"): (1505, {"caffe-segnet": 3}),
    ("LossParameter", "class_weighting"): (4, {"caffe-segnet": 4}),
    ("DropoutParameter", "sample_weights_test"): (1506, {"caffe-segnet": 2}),  # 2 is caffe-fast-rcnn's scale_train
    ("DenseImageDataParameter", "label_divide_factor"): (13, {"caffe-enet": 13}),
    **{("UpsampleParameter", name): (n, {"caffe-segnet": n}) for n, name in enumerate(
        ("scale", "scale_h", "scale_w", "pad_out_h", "pad_out_w", "upsample_h", "upsample_w"), start=1)},
    **{("DenseImageDataParameter", name): (n, {"caffe-segnet": n}) for n, name in enumerate(
        ("source", "batch_size", "rand_skip", "shuffle", "new_height", "new_width", "is_color",
         "mean_file", "root_folder", "mirror", "crop_width", "crop_height"), start=1)},
}


@pytest.mark.parametrize("key", NUMBERS, ids=lambda k: ".".join(k))
def test_fork_field_numbers(key) -> None:
    message, field = key
    ours, forks = NUMBERS[key]
    desc = getattr(caffe_pb2, message).DESCRIPTOR
    assert desc.fields_by_name[field].number == ours
    if ours not in forks.values():  # no fork's number was free: ours is from the block
        assert 1500 <= ours <= 1519


# The collisions that moved or chose numbers: (message, a fork's number, the field holding it here)
COLLISIONS = [("LayerParameter", 137, "embed_param"), ("LayerParameter", 138, "tile_param"),
              ("LayerParameter", 147, "swish_param"), ("V1LayerParameter", 41, "exp_param"),
              ("BNParameter", 1, "scale_filler"), ("BNParameter", 2, "shift_filler"),
              ("BNParameter", 3, "bn_mode"), ("LossParameter", 3, "normalization")]


@pytest.mark.parametrize("message,number,holder", COLLISIONS)
def test_colliding_fork_numbers_are_taken_here(message: str, number: int, holder: str) -> None:
    assert getattr(caffe_pb2, message).DESCRIPTOR.fields_by_number[number].name == holder


def test_v1_bn_enum_is_in_the_free_block() -> None:
    assert caffe_pb2.V1LayerParameter.BN == 1500
    assert caffe_pb2.V1LayerParameter.DECONVOLUTION == 39  # ChenglongChen's BN number


def test_defaults_follow_the_forks() -> None:
    bn = caffe_pb2.BNParameter()
    assert bn.bn_mode == caffe_pb2.BNParameter.LEARN and bn.eps == pytest.approx(1e-5) and bn.frozen is False
    assert bn.momentum == pytest.approx(0.9)
    up = caffe_pb2.UpsampleParameter()
    assert up.scale == 2 and not up.pad_out_h
    dense = caffe_pb2.DenseImageDataParameter()
    assert dense.is_color and dense.label_divide_factor == 1 and dense.root_folder == ""


def test_fork_text_parses_and_round_trips() -> None:
    text = ('type: "BN" bn_param { slope_filler { type: "constant" value: 1 } momentum: 0.95 frozen: true } '
            'upsample_param { scale: 2 upsample_h: 23 upsample_w: 30 } '
            'dense_image_data_param { source: "l.txt" batch_size: 4 label_divide_factor: 8 } '
            'loss_param { weight_by_label_freqs: true class_weighting: 0.2 class_weighting: 3 } '
            'dropout_param { sample_weights_test: true }')
    p = text_format.Parse(text, caffe_pb2.LayerParameter())
    assert caffe_pb2.LayerParameter.FromString(p.SerializeToString()) == p
    assert p.bn_param.frozen and p.upsample_param.upsample_h == 23 and list(p.loss_param.class_weighting) == [
        pytest.approx(0.2), 3.0]
