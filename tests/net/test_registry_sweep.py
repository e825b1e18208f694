"""Registry sweep: every registered layer type builds inside a net, runs forward and backward,
and its inferred top shapes equal the shapes its forward really produces.

Inputs come from DummyData layers (constant values chosen so index/label bottoms are valid).
A newly registered type without an entry in CASES fails ``test_every_type_has_a_case``.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

import caffelike
from caffelike.net import Net, layer_type_list


def dummy(name: str, shape: tuple[int, ...], value: float = 0.5) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "{name}" type: "DummyData" top: "{name}" dummy_data_param {{ '
            f'shape {{ {dims} }} data_filler {{ type: "constant" value: {value} }} }} }}\n')


X4 = [("x", (2, 3, 4, 4), 0.5)]
X2 = [("x", (2, 3), 0.5)]
LABEL = ("label", (2,), 1.0)

# type -> (bottoms as (name, shape, value), layer body, number of tops)
CASES: dict[str, tuple[list, str, int]] = {
    "AbsVal": (X4, "", 1), "BNLL": (X4, "", 1), "ELU": (X4, "", 1), "Exp": (X4, "", 1),
    "Log": (X4, "", 1), "Power": (X4, "power_param { power: 2 shift: 1 }", 1), "ReLU": (X4, "", 1),
    "Sigmoid": (X4, "", 1), "TanH": (X4, "", 1), "Swish": (X4, "", 1),
    "Clip": (X4, "clip_param { min: -1 max: 1 }", 1), "Threshold": (X4, "", 1), "Dropout": (X4, "", 1),
    "PReLU": (X4, "", 1),
    "Accuracy": (X2 + [LABEL], "", 1),
    "ArgMax": (X2, "", 1),
    "BatchNorm": (X4, "", 1),
    "Bias": (X4, "", 1), "Scale": (X4, "scale_param { bias_term: true }", 1),
    "BatchReindex": (X4 + [("idx", (3,), 1.0)], "", 1),
    "Concat": (X4 + [("y", (2, 2, 4, 4), 0.1)], "", 1),
    "ContrastiveLoss": (X2 + [("y", (2, 3), 0.2), ("sim", (2,), 1.0)], "", 1),
    "Convolution": (X4, "convolution_param { num_output: 2 kernel_size: 3 "
                        "weight_filler { type: \"gaussian\" std: 0.1 } }", 1),
    "Deconvolution": (X4, "convolution_param { num_output: 2 kernel_size: 2 stride: 2 }", 1),
    "Crop": (X4 + [("ref", (2, 3, 2, 2), 0.0)], "crop_param { axis: 2 offset: 1 }", 1),
    "DummyData": ([], "dummy_data_param { shape { dim: 2 dim: 3 } }", 1),
    "Eltwise": (X4 + [("y", (2, 3, 4, 4), 0.25)], "", 1),
    "Embed": ([("idx", (2,), 1.0)], "embed_param { input_dim: 5 num_output: 3 }", 1),
    "EuclideanLoss": (X2 + [("y", (2, 3), 0.1)], "", 1),
    "Filter": (X2 + [("sel", (2,), 1.0)], "", 1),
    "Flatten": (X4, "", 1),
    "HingeLoss": (X2 + [LABEL], "", 1),
    "Im2col": (X4, "convolution_param { kernel_size: 2 }", 1),
    "InfogainLoss": (X2 + [LABEL, ("H", (3, 3), 1.0)], "", 1),
    "InnerProduct": (X4, "inner_product_param { num_output: 2 }", 1),
    "Input": ([], "input_param { shape { dim: 2 dim: 3 } }", 1),
    "LRN": (X4, "lrn_param { local_size: 3 }", 1),
    "LSTM": ([("seq", (2, 1, 3), 0.5), ("cont", (2, 1), 1.0)], "recurrent_param { num_output: 2 }", 1),
    "RNN": ([("seq", (2, 1, 3), 0.5), ("cont", (2, 1), 1.0)], "recurrent_param { num_output: 2 }", 1),
    "LSTMUnit": ([("c", (1, 2, 2), 0.1), ("gates", (1, 2, 8), 0.2), ("cont", (1, 2), 1.0)], "", 2),
    "MVN": (X4, "", 1),
    "MultinomialLogisticLoss": ([("p", (2, 3), 0.3), LABEL], "", 1),
    "Parameter": ([], "parameter_param { shape { dim: 2 dim: 3 } }", 1),
    "Pooling": (X4, "pooling_param { kernel_size: 2 stride: 2 }", 1),
    "Reduction": (X4, "", 1),
    "Reshape": (X4, "reshape_param { shape { dim: 0 dim: -1 } }", 1),
    "SPP": (X4, "spp_param { pyramid_height: 2 }", 1),
    "SigmoidCrossEntropyLoss": (X2 + [("t", (2, 3), 1.0)], "", 1),
    "Silence": (X4, "", 0),
    "Slice": (X4, "slice_param { slice_point: 1 }", 2),
    "Softmax": (X4, "", 1),
    "SoftmaxWithLoss": (X2 + [LABEL], "", 1),
    "Split": (X4, "", 2),
    "Tile": (X4, "tile_param { tiles: 2 }", 1),
}

# longpeng2008/Caffe_Long's compute types (caffelike/layers/caffe_long*.py)
CASES.update({
    "DepthwiseConvolution": (X4, "convolution_param { num_output: 3 kernel_size: 3 pad: 1 group: 3 }", 1),
    "ReLU6": (X4, "", 1), "SignedSqrt": (X4, "", 1), "L2Normalize": (X2, "", 1),
    "ChannelShuffle": ([("x", (2, 8, 2, 2), 0.5)], "channel_shuffle_param { group: 2 }", 1),
    "Bilinear": (X4 + [("y", (2, 2, 4, 4), 0.25)], "", 1),
    "CompactBilinear": (X4 + [("y", (2, 2, 4, 4), 0.25)], "compact_bilinear_param { num_output: 8 }", 1),
    "MarginInnerProduct": (X2 + [LABEL], "margin_inner_product_param { num_output: 3 type: DOUBLE "
                                         "weight_filler { type: \"gaussian\" std: 0.1 } }", 2),
    "LargeMarginInnerProduct": (X2 + [LABEL], "largemargin_inner_product_param { num_output: 3 type: DOUBLE "
                                              "weight_filler { type: \"gaussian\" std: 0.1 } }", 2),
    "LabelSpecificAdd": (X2 + [LABEL], "label_specific_add_param { bias: 0.5 }", 1),
    "L1Loss": (X2 + [("y", (2, 3), 0.1)], "", 1), "AsymEuclideanLoss": (X2 + [("y", (2, 3), 0.1)], "", 1),
    "KnowledgeDistillation": (X2 + [("t", (2, 3), 0.1)], "knowledge_distillation_param { temperature: 2 }", 1),
    "MultiLabelAccuracy": (X2 + [("t", (2, 3), 1.0)], "", 1),
    "MultiLabelSigmoidLoss": (X2 + [("t", (2, 3), 1.0)], "", 1),
    "AdaptedWeightedSoftmaxWithLoss": (X2 + [LABEL], "", 1),
    "FixedWeightedSoftmaxWithLoss": (X2 + [LABEL], "", 1),
    "AdaptedWeightedSigmoidCrossEntropyLoss": (X2 + [("t", (2, 3), 1.0)], "", 1),
})

# issue 16, slice misc: SENet, ShuffleNet, MobileNet, YOLO (caffelike/layers/fork_misc.py, yolo.py)
CASES.update({
    "Axpy": ([("a", (2, 3, 1, 1), 0.5), ("x", (2, 3, 4, 4), 0.25), ("y", (2, 3, 4, 4), 0.1)], "", 1),
    "ShuffleChannel": ([("x", (2, 6, 2, 2), 0.5)], "shuffle_channel_param { group: 3 }", 1),
    "ConvolutionDepthwise": (X4, "convolution_param { num_output: 3 kernel_size: 3 pad: 1 }", 1),
    "Reorg": ([("x", (2, 8, 4, 4), 0.5)], "reorg_param { stride: 2 }", 1),
    "Region": ([("x", (2, 14, 3, 3), 0.5)], "region_param { num: 2 classes: 2 }", 1),
})
# Faster R-CNN / R-FCN / PSPNet fork types (caffelike/layers/rcnn.py, interp.py), issue 16
ROIS = ("rois", (2, 5), 0.0)  # (batch 0, box 0,0,0,0): one valid cell
CASES.update({
    "Interp": (X4, "interp_param { zoom_factor: 2 }", 1),
    "ROIPooling": (X4 + [ROIS], "roi_pooling_param { pooled_h: 2 pooled_w: 2 }", 1),
    "PSROIPooling": ([("x", (2, 8, 4, 4), 0.5), ROIS],
                     "psroi_pooling_param { output_dim: 2 group_size: 2 spatial_scale: 1 }", 1),
    "SmoothL1Loss": (X2 + [("y", (2, 3), 0.1)], "", 1),
})
# ParseNet types (caffelike/layers/parsenet.py), issue 16
CASES.update({
    "UnPooling": ([("x", (2, 3, 1, 1), 0.5), ("like", (2, 3, 4, 4), 0.0)],
                  "unpooling_param { unpool: REP out_kernel_size: 0 }", 1),
    "ParseOutput": (X4, "", 2),
    "ParseEvaluate": ([("pred", (2, 1, 4, 4), 1.0), ("gt", (2, 1, 4, 4), 2.0)],
                      "parse_evaluate_param { num_labels: 3 }", 1),
})

# SegNet/ENet/PSPNet/YOLO compute types (issue 16; tests/layers/test_segnet.py, test_fork_bn.py)
CASES.update({
    "Upsample": (X4 + [("mask", (2, 3, 4, 4), 5.0)], "upsample_param { scale: 2 }", 1),
    "BN": (X4, "", 1),
})

# SSD's types (weiliu89/caffe ssd; caffelike/layers/ssd*.py): constant inputs give degenerate
# boxes, so the detection cases use CORNER decoding and one prior, one image (one row out).
CASES.update({
    "PriorBox": (X4 + [("img", (2, 3, 16, 16), 0.0)], "prior_box_param { min_size: 4 aspect_ratio: 2 variance: 0.1 }", 1),
    "Permute": (X4, "permute_param { order: 0 order: 2 order: 3 order: 1 }", 1),
    "Normalize": (X4, "norm_param { across_spatial: false channel_shared: false }", 1),
    "DetectionOutput": ([("loc", (1, 4), 0.1), ("conf", (1, 2), 0.5), ("prior", (1, 2, 4), 0.5)],
                        "detection_output_param { num_classes: 2 }", 1),
    "DetectionEvaluate": ([("det", (1, 1, 1, 7), 1.0), ("gt", (1, 1, 1, 8), 1.0)],
                          "detection_evaluate_param { num_classes: 2 }", 1),
    "MultiBoxLoss": ([("loc", (2, 8), 0.1), ("conf", (2, 6), 0.5), ("prior", (1, 2, 8), 0.5),
                      ("gt", (1, 1, 1, 8), 1.0)], "multibox_loss_param { num_classes: 3 }", 1),
})

# Types that read or write external data: exercised with real files below.
SOURCE_TYPES = {"Data", "HDF5Data", "HDF5Output", "ImageData", "MemoryData", "Python", "WindowData"}
# Caffe_Long's data layers: exercised with real files in tests/data/test_caffe_long_data.py.
SOURCE_TYPES |= {"ImageSegData", "ImageProbData", "ImageRegressionData"}
# SegNet's and HED's list layers: tests/data/test_dense_image_data.py.
SOURCE_TYPES |= {"DenseImageData", "ImageLabelmapData"}
# SSD's AnnotatedData: exercised with real LMDBs in tests/data/test_annotated_data.py.
SOURCE_TYPES |= {"AnnotatedData"}


def test_layer_type_list_is_sorted_and_complete():
    names = layer_type_list()
    assert names == sorted(names) and "Convolution" in names
    assert caffelike.layer_type_list() == names


def test_every_type_has_a_case():
    missing = [t for t in layer_type_list() if t not in CASES and t not in SOURCE_TYPES]
    assert not missing, f"add registry sweep cases for {missing}"


def _net_text(kind: str) -> str:
    bottoms, body, n_tops = CASES[kind]
    text = "force_backward: true\n" + "".join(dummy(n, s, v) for n, s, v in bottoms)
    refs = "".join(f' bottom: "{n}"' for n, _, _ in bottoms)
    tops = "".join(f' top: "out{i}"' for i in range(n_tops))
    return text + f'layer {{ name: "layer" type: "{kind}"{refs}{tops} {body} }}\n'


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("phase", [caffelike.TRAIN, caffelike.TEST])
def test_type_builds_and_runs(kind, phase, tmp_path):
    path = tmp_path / "sweep.prototxt"
    path.write_text(_net_text(kind))
    net = Net(str(path), phase)
    blobs = net.run()
    for name, blob in net.blobs.items():
        assert tuple(blobs[name].shape) == blob.shape, f"{kind}: inferred {name} shape differs from forward"
    grads = [t for n, t in blobs.items() if n.startswith("out") and t.requires_grad]
    if grads:
        torch.autograd.backward([g.sum() for g in grads])
    outs = net.forward()
    assert set(outs) == set(net.outputs)
    net.backward()


def test_hdf5_data_and_output(tmp_path):
    import h5py

    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["data"] = np.arange(24, dtype=np.float32).reshape(4, 6)
        f["label"] = np.arange(4, dtype=np.float32)
    (tmp_path / "list.txt").write_text(str(tmp_path / "d.h5") + "\n")
    text = (f'layer {{ name: "d" type: "HDF5Data" top: "data" top: "label" '
            f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 2 }} }}\n'
            f'layer {{ name: "o" type: "HDF5Output" bottom: "data" bottom: "label" '
            f'hdf5_output_param {{ file_name: "{tmp_path / "out.h5"}" }} }}\n')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = Net(str(path), caffelike.TRAIN)
    assert net.blobs["data"].shape == (2, 6)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, np.arange(12, dtype=np.float32).reshape(2, 6))
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [2, 3])


def test_image_data(tmp_path):
    import cv2

    img = np.full((5, 6, 3), 7, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "list.txt").write_text("a.png 3\n")
    text = (f'layer {{ name: "d" type: "ImageData" top: "data" top: "label" '
            f'image_data_param {{ source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" batch_size: 1 }} }}\n')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = Net(str(path), caffelike.TEST)
    assert net.blobs["data"].shape == (1, 3, 5, 6)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, 7)
    assert net.blobs["label"].data.ravel().tolist() == [3]
