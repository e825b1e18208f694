"""Every net and solver prototxt of the corpus parses, or fails exactly as listed here.

Expected failures come from real Caffe: `FAIL` rows of golden/upgrade/index.tsv, `parse_error`
rows of golden/shapes/skipped.json (Caffe's own file:line:col), and the MANIFEST's "strict text
parse: FAIL" notes for fork-only fields. Files that failed in Caffe only because of the book
fork's TransformationParameter fields (min_side_min, ...) or of a fork field listed in
FORK_FIELDS_IN_SCHEMA (DenseNet's pooling_param.ceil_mode, SegNet/ENet's bn_param and
dense_image_data_param; issue 16) parse here: caffelike's
caffe.proto adds exactly those fields (proto/caffe.proto header).
"""
from __future__ import annotations

import csv
import json
import logging
import pathlib
import re

import pytest

from caffelike.errors import PrototxtError
from caffelike.io import parse_text_proto, read_net, read_solver
from caffelike.io.prototxt import to_text
from caffelike.proto import caffe_pb2

TESTS = pathlib.Path(__file__).resolve().parents[1]
CORPUS = TESTS / "data" / "corpus"
GOLDEN = TESTS / "golden"
REPARSE_LIMIT = 40_000  # characters; the big ResNets/DenseNets only cost time
HINT = "(use --allow-unknown-fields / allow_unknown_fields=True to skip fields from Caffe forks)"

ROWS = [row for row in csv.DictReader((CORPUS / "MANIFEST.tsv").open(), delimiter="\t")
        if row["kind"] in ("net", "net_v0", "net_v1", "solver")]

# file -> (line, column, field, message, layer text or "") of the first fork-only field.
FORK_FIELDS: dict[str, tuple[int, int, str, str, str]] = {
    "BVLC__caffe@v1/examples/mnist/lenet_stepearly_solver.prototxt": (18, 1, "stepearly", "SolverParameter", ""),
    # (The book fork's own fields, e.g. min_side_min, contrast_brightness_adjustment and
    # compact_bilinear_param, are in our schema: those nets parse; see test_caffe_long_nets_parse.)
}

# Files BVLC Caffe refuses for a fork field that our schema holds (issue 16): they parse here.
# file -> the fork field (proto/caffe.proto documents its number).
FORK_FIELDS_IN_SCHEMA: dict[str, str] = {
    **{f"shicai__DenseNet-Caffe/DenseNet_{n}.prototxt": "ceil_mode" for n in (121, 161, 169, 201)},
    # py-faster-rcnn (rbgirshick/caffe-fast-rcnn's roi_pooling_param, smooth_l1_loss_param), issue 16
    "rbgirshick__py-faster-rcnn/models/pascal_voc/VGG16/faster_rcnn_end2end/test.prototxt": "roi_pooling_param",
    "rbgirshick__py-faster-rcnn/models/pascal_voc/VGG16/faster_rcnn_end2end/train.prototxt": "smooth_l1_loss_param",
    "rbgirshick__py-faster-rcnn/models/pascal_voc/ZF/faster_rcnn_end2end/test.prototxt": "roi_pooling_param",
    "rbgirshick__py-faster-rcnn/models/pascal_voc/ZF/faster_rcnn_end2end/train.prototxt": "smooth_l1_loss_param",
    "rbgirshick__py-faster-rcnn/models/pascal_voc/VGG_CNN_M_1024/faster_rcnn_end2end/test.prototxt": "roi_pooling_param",
    "rbgirshick__py-faster-rcnn/models/pascal_voc/VGG_CNN_M_1024/faster_rcnn_end2end/train.prototxt": "smooth_l1_loss_param",
    "rbgirshick__py-faster-rcnn/models/pascal_voc/VGG16/fast_rcnn/test.prototxt": "roi_pooling_param",
    # SegNet/ENet (issue 16, slice segnet): bn_param 45, dense_image_data_param 46
    **{f"TimoSaemann__ENet/prototxts/enet_{n}.prototxt": "bn_param" for n in ("deploy", "deploy_final")},
    **{f"TimoSaemann__ENet/prototxts/enet_{n}.prototxt": "dense_image_data_param"
       for n in ("train_encoder", "train_encoder_decoder")},
    **{f"alexgkendall__SegNet-Tutorial/Models/{n}.prototxt": "dense_image_data_param"
       for n in ("segnet_train", "segnet_inference", "bayesian_segnet_basic_inference")},
    # SSD's fork (weiliu89/caffe ssd): its layer params, transform policies and solver fields
    "chuanqi305__MobileNet-SSD/voc/MobileNetSSD_deploy.prototxt": "permute_param",
    "chuanqi305__MobileNet-SSD/voc/MobileNetSSD_train.prototxt": "resize_param",
    "chuanqi305__MobileNet-SSD/voc/MobileNetSSD_test.prototxt": "resize_param",
    "chuanqi305__MobileNet-SSD/voc/solver.prototxt": "eval_type",
    # ParseNet's solver (weiliu89/caffe branch fcn's eval_type), issue 16
    "natanielruiz__net-archive/parsenet/VGG_VOC2012ext_solver.prototxt": "eval_type",
    # ParseNet's net (filter_stride, norm_param, bin_size, unpooling_param, ...), issue 16
    "natanielruiz__net-archive/parsenet/VGG_VOC2012ext.prototxt": "filter_stride",
}

# Files real Caffe refuses to parse: the exact one-line error (line:col as Caffe reports them).
SYNTAX_ERRORS: dict[str, str] = {
    "natanielruiz__net-archive/poolmean/poolmean.prototxt": "57:13: cannot parse NetParameter: Expected string but found: '.' (field 'source' of layer 'data' (HDF5Data))",
    "natanielruiz__net-archive/yearbook/deploy.prototxt": "17:13: cannot parse NetParameter: Expected string but found: '/' (field 'source' of layer 'data' (Data))",
    "natanielruiz__net-archive/yearbook/train_val.prototxt": "17:13: cannot parse NetParameter: Expected string but found: '/' (field 'source' of layer 'data' (Data))",
    "natanielruiz__net-archive/mixture_dcnn/base_model.prototxt": "284:17: cannot parse NetParameter: Couldn't parse integer: NUM_OUTPUTS (field 'num_output' of layer 'fc8-EXPERT_NUM' (INNER_PRODUCT))",
    # mixed V1 `layers { type: ENUM }` and V2 string types: Caffe fails at the same place
    "lim0606__caffe-googlenet-bn/deploy.prototxt": "3106:9: cannot parse NetParameter: Enum type \"caffe.V1LayerParameter.LayerType\" has no value named \"Softmax\". (field 'type' of layer 'prob' (Softmax))",
}

# Files that parse but that Caffe's upgrade refuses (index.tsv FAIL rows).
UPGRADE_ERRORS: dict[str, str] = {
    "natanielruiz__net-archive/hash-codes/train_CIFAR10_48.prototxt":
        "2: layer 'data' (data): V0 parameter 'det_fg_threshold' does not apply to layer type "
        "'data' (it applies to window_data); Caffe's upgrade refuses it",
}


def _read(row: dict, **kwargs):
    path = CORPUS / row["local_file"]
    if row["kind"] == "solver":
        return read_solver(path, snapshot_prefix=False, **kwargs)
    return read_net(path, **kwargs)[0]


def test_expected_failures_cover_real_caffe_refusals() -> None:
    index = list(csv.DictReader((GOLDEN / "upgrade" / "index.tsv").open(), delimiter="\t"))
    refused = {r["input"] for r in index if r["result"].startswith("FAIL")}
    skipped = json.loads((GOLDEN / "shapes" / "skipped.json").read_text())["nets"]
    caffe_parse_errors = {n["id"]: n["caffe_error"][0] for n in skipped
                          if n["category"].startswith("parse_error")}
    listed = set(FORK_FIELDS) | set(SYNTAX_ERRORS) | set(UPGRADE_ERRORS) | set(FORK_FIELDS_IN_SCHEMA)
    assert refused <= listed | set(CAFFE_LONG_NETS)
    for name, error in caffe_parse_errors.items():
        assert name in listed or name in CAFFE_LONG_NETS or "min_side_min" in error, name
        if name in SYNTAX_ERRORS:  # same line:col as Caffe's own parser
            position = re.search(r"NetParameter: (\d+:\d+):", error).group(1)
            assert SYNTAX_ERRORS[name].startswith(position + ":"), (name, error)
        if name in FORK_FIELDS_IN_SCHEMA:  # Caffe stopped at exactly that field
            assert f'has no field named "{FORK_FIELDS_IN_SCHEMA[name]}"' in error, (name, error)
    manifest_fail = {r["local_file"] for r in ROWS if "strict text parse: FAIL" in r["notes"]}
    book_only = {r["local_file"] for r in ROWS if "has no field named 'min_side_min" in r["notes"]}
    assert manifest_fail - book_only - set(FORK_FIELDS) - set(SYNTAX_ERRORS) - set(CAFFE_LONG_NETS) \
        - set(FORK_FIELDS_IN_SCHEMA) == set()
    for name, field in FORK_FIELDS_IN_SCHEMA.items():
        (row,) = [r for r in ROWS if r["local_file"] == name]
        # (the MANIFEST's notes cut some messages short after the name: 'resize_param)')
        assert re.search(rf"has no field named '{re.escape(field)}['.)]", row["notes"]), name


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r["local_file"])
def test_corpus_file(row: dict, caplog: pytest.LogCaptureFixture) -> None:
    name = row["local_file"]
    path = CORPUS / name
    if name in SYNTAX_ERRORS:
        for skip in (False, True):
            with pytest.raises(PrototxtError) as info:
                _read(row, allow_unknown_fields=skip)
            assert str(info.value) == f"{path}:{SYNTAX_ERRORS[name]}"
        return
    if name in UPGRADE_ERRORS:
        with pytest.raises(PrototxtError) as info:
            _read(row)
        assert str(info.value) == f"{path}:{UPGRADE_ERRORS[name]}"
        return
    if name in FORK_FIELDS:
        line, col, field, message, layer = FORK_FIELDS[name]
        with pytest.raises(PrototxtError) as info:
            _read(row)
        assert str(info.value) == (f"{path}:{line}:{col}: unknown field '{field}' in caffe.{message}"
                                   f"{layer}; it is not in BVLC Caffe's caffe.proto {HINT}")
        with caplog.at_level(logging.WARNING, logger="caffelike"):
            parsed = _read(row, allow_unknown_fields=True)
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and "skipped unknown field" in r.getMessage()]
        assert warnings[0].startswith(f"{path}:{line}:{col}: skipped unknown field '{field}' in caffe.{message}")
        assert len(warnings) == len(set(w.split(": skipped unknown field ")[1].split(" (")[0] for w in warnings))
    else:
        parsed = _read(row)
    if name in FORK_FIELDS_IN_SCHEMA:  # the fork field is read, not skipped
        assert FORK_FIELDS_IN_SCHEMA[name] in to_text(parsed)
    if isinstance(parsed, caffe_pb2.NetParameter):
        assert len(parsed.layer) and not len(parsed.layers) and not len(parsed.input)
    _assert_round_trips(parsed)


def _assert_round_trips(message) -> None:
    """text -> binary -> text keeps every field (re-parsing the text only for smaller nets)."""
    binary = message.SerializeToString()
    again = type(message).FromString(binary)
    assert again == message
    text = to_text(again)
    assert text == to_text(message)
    if len(text) < REPARSE_LIMIT:
        assert parse_text_proto(text, type(message)) == message


CAFFE_LONG_NETS = [
    "longpeng2008__yousan.ai/face_book_ch8/mobilenet_train.prototxt",
    "longpeng2008__yousan.ai/imgrec_book_ch4_finegrained/ft_last_layer.prototxt",
    "longpeng2008__Caffe_Long/longpeng_examples/testlosses/lsoftmax/train.prototxt",
    "longpeng2008__Caffe_Long/longpeng_examples/testlosses/asoftmax/train.prototxt",
]


@pytest.mark.parametrize("name", CAFFE_LONG_NETS)
def test_caffe_long_nets_parse(name: str) -> None:
    """BVLC Caffe stops at the book fork's fields; our schema holds them (issue 14), so these parse."""
    from caffelike.io import read_net

    parsed, _ = read_net(CORPUS / name)
    assert len(parsed.layer)
    _assert_round_trips(parsed)
