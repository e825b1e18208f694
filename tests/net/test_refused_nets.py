"""Every corpus net real Caffe refuses is refused here too, for the reason Caffe gave.

Golden data: tests/golden/shapes/skipped.json (NETS.md §2): each corpus net that
``caffe.Net(file, caffe.TEST)`` could not build, in a folder without the net's data, with
Caffe's error lines. All rows are checked, not only parse errors. Each net is built with
``caffelike.Net(file, caffelike.TEST)`` from an empty folder, as Caffe ran it; it must raise a
clean user error (a ``CaffelikeError``: one message naming the file, layer and cause, which the
CLI prints as ``caffelike <cmd>: error: ...``) whose message names what Caffe's message names.

The expected fragments are read from Caffe's own error lines by the rules of ``REASONS``.
``DIFFERENT_BY_DESIGN`` lists the few nets that caffelike refuses for another reason, each
with why; ``BUILT_BY_DESIGN`` and ``READ_ON_BY_DESIGN`` the nets Caffe refused for a fork field
that our schema holds (issue 16), which caffelike builds or reads on to the next refusal;
``BUILT_FORK_TYPES`` those it refused for a fork layer type caffelike has (issue 16).
test_corpus_outcomes sorts every corpus net (these and the ones Caffe built) into outcome
classes; the reasons are checked here. ``SSD_READ_ON``: the SSD nets caffelike reads past
the field Caffe stopped at.
"""
from __future__ import annotations

import re

import pytest

import caffelike
from caffelike.errors import CaffelikeError, DataError, LayerError, NetError, PrototxtError

from .corpus_nets import CORPUS, MISSING_MODULE, SKIPPED_ROWS as ROWS, hide_missing_modules

# (pattern on one of Caffe's error lines, caffelike's error class, fragments its message must
# hold: format strings over the pattern's groups and ``last``, the layer Caffe was creating)
REASONS: list[tuple[re.Pattern, type, tuple[str, ...]]] = [
    (re.compile(r'NetParameter: (\d+):\d+: Message type "caffe\.(\w+)" has no field named "(\w+)"'),
     PrototxtError, (":{0}:", "unknown field '{2}' in caffe.{1}")),
    (re.compile(r"NetParameter: (\d+:\d+): "), PrototxtError, (":{0}: cannot parse NetParameter",)),
    (re.compile(r"Unknown layer type: (\w+)"), NetError, ("unknown layer type '{0}'",)),
    (re.compile(r"Unknown bottom blob '(\S+)' \(layer '(\S+)', bottom index (\d+)\)"), NetError,
     ("layer '{1}'", "unknown bottom blob '{0}' (bottom index {2})")),
    (re.compile(r"db_lmdb\.hpp.*No such file or directory"), DataError,
     ("layer '{last}' (Data)", "cannot open LMDB")),
    (re.compile(r"Failed to open leveldb (\S+)"), DataError, ("cannot open LevelDB '{0}'",)),
    (re.compile(r"io\.cpp.*File not found: (\S+)"), DataError, ("cannot open mean_file '{0}'",)),
    (re.compile(r"hdf5_data_layer\.cpp.*Failed to open source file: (\S+)"), DataError,
     ("cannot open HDF5 file list '{0}'",)),
    # Caffe reads a missing list as an empty one
    (re.compile(r"image_data_layer\.cpp.*File is empty"), DataError, ("layer '{last}' (ImageData)",
                                                                      "cannot open image list")),
    (MISSING_MODULE, LayerError, ("layer '{last}' (Python)", "cannot import Python layer module '{0}")),
]

# caffelike's caffe.proto adds the book fork's TransformationParameter fields (proto/caffe.proto
# header), so where Caffe stopped at min_side_min caffelike reads on and stops at the next thing
# BVLC Caffe lacks; and for a V0 net it refuses the upgrade that Caffe's Net logged as errors
# and went past ("continuing anyway", then failing on the missing LevelDB), as Caffe's own
# upgrade_net_proto_text refuses it (golden/upgrade/index.tsv).
CAFFE_LONG_FIELDS = ("min_side_min", "margin_inner_product_param", "largemargin_inner_product_param",
                     "compact_bilinear_param")
# BVLC Caffe lacks the fork's data layers, which caffelike has (issue 14): it reads on to the
# missing list file.
CAFFE_LONG_DATA_LAYERS = ("ImageSegData", "ImageProbData", "ImageRegressionData")
# Likewise SegNet/ENet's fields and HED's data layer (issue 16): caffelike reads on to the
# missing list file or Python module.
SEGNET_FIELDS = ("bn_param", "dense_image_data_param")
SEGNET_DATA_LAYERS = ("ImageLabelmapData",)
DIFFERENT_BY_DESIGN: dict[str, tuple[type, tuple[str, ...]]] = {
    "longpeng2008__yousan.ai/face_book_ch7_age/mobilenet_train.prototxt":
        (DataError, ("layer 'data' (ImageRegressionData)", "cannot open image list 'utkfacegood_val.txt'")),
    "longpeng2008__yousan.ai/face_book_ch8/mobilenet_train.prototxt":
        (DataError, ("layer 'data' (ImageSegData)", "cannot open image list 'all_val.txt'")),
    "longpeng2008__yousan.ai/imgrec_book_ch4_expr/mobilenet_train.prototxt":
        (DataError, ("layer 'data' (ImageData)", "cannot open image list 'all_shuffle_val.txt'")),
    "longpeng2008__yousan.ai/modeldesign_ch8/MobileDenseSegNet_MOUTH160_train.prototxt":
        (DataError, ("layer 'data' (ImageSegData)", "cannot open image list 'all_shuffle_val.txt'")),
    "longpeng2008__yousan.ai/photo_book_ch3/mobilenet_train.prototxt":
        (DataError, ("layer 'data' (ImageProbData)", "cannot open image list 'all_val.txt'")),
    "longpeng2008__yousan.ai/imgrec_book_ch8/mobilenet_train_MobileSegNet160.prototxt":
        (DataError, ("layer 'data' (ImageSegData)", "cannot open image list 'level0_val.txt'")),
    "longpeng2008__yousan.ai/modeldesign_ch7/allconv5_skip_add.prototxt":
        (DataError, ("layer 'data' (ImageSegData)", "cannot open image list 'test.txt'")),
    # Caffe stops at a Caffe_Long field (margin_inner_product_param, compact_bilinear_param, ...),
    # which our schema holds (issue 14); caffelike builds on to the next thing it lacks.
    "longpeng2008__Caffe_Long/longpeng_examples/testlosses/asoftmax/train.prototxt":
        (DataError, ("layer 'data' (ImageData)", "cannot open image list 'val.txt'")),
    "longpeng2008__Caffe_Long/longpeng_examples/testlosses/lsoftmax/train.prototxt":
        (DataError, ("layer 'data' (ImageData)", "cannot open image list 'val.txt'")),
    "longpeng2008__yousan.ai/imgrec_book_ch4_finegrained/ft_last_layer.prototxt":
        (DataError, ("layer 'data' (ImageData)", "cannot open image list 'test_shuffle.txt'")),
    "TimoSaemann__ENet/prototxts/enet_deploy.prototxt":
        (LayerError, ("layer 'drop1_0_3' (Python)", "cannot import Python layer module 'spatial_dropout'")),
    **{f"TimoSaemann__ENet/prototxts/enet_{n}.prototxt":
       (DataError, ("layer 'data' (DenseImageData)", "cannot open image list 'ENet/dataset/train_fine_2columns.txt'"))
       for n in ("train_encoder", "train_encoder_decoder")},
    **{f"alexgkendall__SegNet-Tutorial/Models/{n}.prototxt":
       (DataError, ("layer 'data' (DenseImageData)", "cannot open image list", f"CamVid/{lst}.txt'"))
       for n, lst in (("segnet_train", "train"), ("segnet_inference", "test"),
                      ("bayesian_segnet_basic_inference", "test"))},
    "natanielruiz__net-archive/holistically-nested/train_val.prototxt":
        (DataError, ("layer 'data' (ImageLabelmapData)", "cannot open image list '../../data/HED-BSDS/train_pair.lst'")),
    "natanielruiz__net-archive/hash-codes/train_CIFAR10_48.prototxt":
        (PrototxtError, ("V0 parameter 'det_", "does not apply to layer type 'data'",
                         "Caffe's upgrade refuses it")),
}


# Caffe stopped at a fork field that our schema holds (issue 16: the forks' pooling_param
# ceil_mode, false = floor rounding; ENet's bn_param): caffelike builds these nets. net id ->
# (the field, a blob whose shape shows the fork's semantics: DenseNet's pool1 (k3 s2 p1 on 112)
# is 56, not 57; the net's outputs).
BUILT_BY_DESIGN: dict[str, tuple[str, str, tuple[int, ...], dict[str, tuple[int, ...]]]] = {
    **{f"shicai__DenseNet-Caffe/DenseNet_{n}.prototxt": ("ceil_mode", "pool1", (1, c, 56, 56), {"fc6": (1, 1000, 1, 1)})
       for n, c in ((121, 64), (161, 96), (169, 64), (201, 64))},
    "TimoSaemann__ENet/prototxts/enet_deploy_final.prototxt":
        ("bn_param", "upsample5_0_4", (1, 16, 256, 512), {"deconv6_0_0": (1, 19, 512, 1024)}),
}

# Caffe stopped at a fork layer type that caffelike has (issue 16): these nets build. net id ->
# (the type Caffe lacked, an output blob and its shape).
BUILT_FORK_TYPES: dict[str, tuple[str, str, tuple[int, ...]]] = {
    f"hujie-frank__SENet/models/{n}.prototxt": ("Axpy", "prob", (1, 1000))
    for n in ("SE-ResNet-50", "SE-ResNet-101", "SE-ResNet-152", "SE-ResNeXt-50", "SE-ResNeXt-101", "SENet-154")
}

# Caffe stopped at a Faster R-CNN / ParseNet fork field that our schema holds (issue 16, slice
# rcnn): caffelike reads on and builds, or stops where the fork's own Caffe would (py-faster-rcnn's
# Python layer modules are not importable here), or at the next fork field it lacks.
# net id -> (the field Caffe stopped at, the error class or None when the net builds, fragments)
_PY_FRCNN = "rbgirshick__py-faster-rcnn/models/pascal_voc"
_PROPOSAL = (LayerError, ("layer 'proposal' (Python)", "cannot import Python layer module 'rpn.proposal_layer'"))
_ROI_DATA = (LayerError, ("layer 'input-data' (Python)", "cannot import Python layer module 'roi_data_layer.layer'"))
READ_ON_BY_DESIGN: dict[str, tuple[str, type | None, tuple[str, ...]]] = {
    f"{_PY_FRCNN}/VGG16/fast_rcnn/test.prototxt": ("roi_pooling_param", None, ()),
    **{f"{_PY_FRCNN}/{arch}/faster_rcnn_end2end/test.prototxt": ("roi_pooling_param",) + _PROPOSAL
       for arch in ("VGG16", "ZF", "VGG_CNN_M_1024")},
    **{f"{_PY_FRCNN}/{arch}/faster_rcnn_end2end/train.prototxt": ("smooth_l1_loss_param",) + _ROI_DATA
       for arch in ("VGG16", "ZF", "VGG_CNN_M_1024")},
    "natanielruiz__net-archive/parsenet/VGG_VOC2012ext.prototxt":
        ("filter_stride", DataError, ("layer 'data' (Data)", "cannot open LMDB")),
}
# SSD's fork (weiliu89/caffe ssd, issue 16): the deploy net builds (its priors, and the
# detection top's set-up shape); the train/test nets read on to what Caffe would stop at next.
SSD = "chuanqi305__MobileNet-SSD/voc/MobileNetSSD"
BUILT_BY_DESIGN[f"{SSD}_deploy.prototxt"] = ("permute_param", "mbox_priorbox", (1, 2, 7668),
                                             {"detection_out": (1, 1, 1, 7)})
SSD_READ_ON: dict[str, tuple[str, type, tuple[str, ...]]] = {
    f"{SSD}_test.prototxt": ("resize_param", DataError, ("layer 'data' (AnnotatedData)", "cannot open LMDB 'test_lmdb'")),
    # in TEST the TRAIN-only data layer is left out, as Caffe leaves it out
    f"{SSD}_train.prototxt": ("resize_param", NetError, ("layer 'conv0' (Convolution)",
                                                        "unknown bottom blob 'data' (bottom index 0)")),
}


def _expected(row: dict) -> tuple[type, tuple[str, ...]]:
    """The error class and message fragments Caffe's error lines call for."""
    if row["id"] in SSD_READ_ON:
        field, error, fragments = SSD_READ_ON[row["id"]]
        assert any(f'has no field named "{field}"' in line for line in row["caffe_error"])
        return error, fragments
    if row["id"] in DIFFERENT_BY_DESIGN:
        assert any(any(f in line for f in CAFFE_LONG_FIELDS + SEGNET_FIELDS) or "Unknown parameter det_" in line
                   or any(f"Unknown layer type: {t} " in line for t in CAFFE_LONG_DATA_LAYERS + SEGNET_DATA_LAYERS)
                   for line in row["caffe_error"])
        return DIFFERENT_BY_DESIGN[row["id"]]
    for pattern, error, fragments in REASONS:
        for line in row["caffe_error"]:
            if m := pattern.search(line):
                last = row.get("last_layer_created")
                return error, tuple(f.format(*m.groups(), last=last) for f in fragments)
    raise AssertionError(f"no rule reads Caffe's error for {row['id']}: {row['caffe_error']}")


def test_every_category_of_refusal_is_covered():
    categories = {row["category"].split(" (")[0] for row in ROWS}
    assert categories == {"needs_data_source_or_python_module", "parse_error", "unknown_layer_type",
                          "undeclared_input_blob"}
    assert len(ROWS) == 103


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row["id"])
def test_net_caffe_refuses_is_refused_for_its_reason(row, tmp_path, monkeypatch):
    if row["id"] in BUILT_BY_DESIGN:
        field, blob, shape, outputs = BUILT_BY_DESIGN[row["id"]]
        assert any(f'has no field named "{field}"' in line for line in row["caffe_error"])
        monkeypatch.chdir(tmp_path)
        net = caffelike.Net(str(CORPUS / row["provenance"]["corpus_file"]), caffelike.TEST)
        assert net.blobs[blob].data.shape == shape
        assert {k: net.blobs[k].data.shape for k in net.outputs} == outputs
        return
    if row["id"] in BUILT_FORK_TYPES:
        kind, blob, shape = BUILT_FORK_TYPES[row["id"]]
        assert any(f"Unknown layer type: {kind} " in line for line in row["caffe_error"])
        net = caffelike.Net(str(CORPUS / row["provenance"]["corpus_file"]), caffelike.TEST, fill=False)
        assert net.blobs[blob].data.shape == shape
        return
    if row["id"] in READ_ON_BY_DESIGN:
        field, error, fragments = READ_ON_BY_DESIGN[row["id"]]
        assert any(f'has no field named "{field}"' in line for line in row["caffe_error"])
        if error is None:
            monkeypatch.chdir(tmp_path)
            assert caffelike.Net(str(CORPUS / row["provenance"]["corpus_file"]), caffelike.TEST, fill=False)
            return
    else:
        error, fragments = _expected(row)
    monkeypatch.chdir(tmp_path)  # none of the net's data sources exist here, as for Caffe
    hide_missing_modules([row], monkeypatch)  # nor the Python modules Caffe could not import
    with pytest.raises(CaffelikeError) as info:
        caffelike.Net(str(CORPUS / row["provenance"]["corpus_file"]), caffelike.TEST)
    message = str(info.value)
    assert isinstance(info.value, error), f"{type(info.value).__name__}: {message}"
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
