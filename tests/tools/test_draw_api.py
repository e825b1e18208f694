"""``caffelike.draw``: pycaffe's ``caffe.draw`` (labels, colours and options of Caffe's draw.py, 9b89154).

The expected labels are written from Caffe's draw.py format strings; the DOT text that
``caffelike draw_net`` writes without pydot is compared with pydot's own rendering of the graph.
"""
from __future__ import annotations

import pathlib
import shutil
import sys

import pytest
from google.protobuf import text_format

from caffelike import draw
from caffelike.proto import caffe_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
LENET = ROOT.parent / "shared" / "corpus" / "BVLC__caffe" / "examples" / "mnist" / "lenet_train_test.prototxt"


def layer(text: str) -> caffe_pb2.LayerParameter:
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def lenet() -> caffe_pb2.NetParameter:
    if not LENET.is_file():
        pytest.fail(f"{LENET} is missing: the test needs the shared/ folder beside the clone")
    return text_format.Parse(LENET.read_text(), caffe_pb2.NetParameter())


def test_layer_labels_as_caffe_writes_them() -> None:
    conv = layer('name: "conv1" type: "Convolution" convolution_param { num_output: 20 kernel_size: 5 }')
    assert draw.get_layer_label(conv, "LR") == r'"conv1\n(Convolution)\nkernel size: 5\nstride: 1\npad: 0"'
    pool = layer('name: "pool1" type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }')
    assert draw.get_layer_label(pool, "TB") == '"pool1 (Pooling MAX) kernel size: 2 stride: 2 pad: 0"'
    ip = layer('name: "ip" type: "InnerProduct" param { lr_mult: 1 } param { lr_mult: 2 }')
    assert draw.get_layer_label(ip, "LR", display_lrm=True) == r'"ip\n(InnerProduct)\nlr mult: 1.0, 2.0"'
    frozen = layer('name: "ip" type: "InnerProduct" param { lr_mult: 0 } param { lr_mult: 0 }')
    assert draw.get_layer_label(frozen, "BT", display_lrm=True) == '"ip (InnerProduct)"'
    assert draw.get_layer_lr_mult(layer('name: "c" type: "Convolution"')) == (1.0, 1.0)
    with pytest.raises(ValueError):
        draw.get_layer_lr_mult(layer('name: "r" type: "ReLU"'))


def test_colours_and_edge_labels() -> None:
    assert [draw.choose_color_by_layertype(t) for t in ("Convolution", "Deconvolution", "Pooling",
                                                          "InnerProduct", "ReLU")] == \
        ["#FF5050", "#FF5050", "#FF9900", "#CC33FF", "#6495ED"]
    assert draw.get_edge_label(layer('name: "d" type: "Data" data_param { batch_size: 64 }')) == "Batch 64"
    assert draw.get_edge_label(layer('name: "ip" type: "InnerProduct" inner_product_param { num_output: 10 }')) == "10"
    assert draw.get_edge_label(layer('name: "r" type: "ReLU"')) == '""'
    assert draw.get_pooling_types_dict() == {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}


def test_graph_of_lenet_by_phase() -> None:
    net = lenet()
    both = draw.net_graph(net, "LR")
    test = draw.net_graph(net, "LR", phase=caffe_pb2.TEST)
    # two "mnist" Data layers (TRAIN batch 64, TEST batch 100): one node, as in Caffe
    assert sum(1 for s, t, label in both.edges if label == "Batch 64") == 2
    assert {label for s, t, label in test.edges if label.startswith("Batch")} == {"Batch 100"}
    assert test.nodes[r'"relu1\n(ReLU)"'] == draw.NEURON_LAYER_STYLE  # in place: green
    assert test.nodes["ip1"] == draw.BLOB_STYLE  # a blob last seen as a bottom: grey octagon
    assert test.nodes["loss"] == {}  # last seen as a top: Graphviz's default, as in Caffe
    bad = caffe_pb2.NetParameter()
    bad.layer.add(name="x", type="ReLU").include.add(phase=caffe_pb2.TEST)
    bad.layer[0].exclude.add(phase=caffe_pb2.TRAIN)
    with pytest.raises(ValueError, match="both include and exclude"):
        draw.net_graph(bad, "LR", phase=caffe_pb2.TEST)


def test_dot_text_equals_pydots_rendering() -> None:
    net = lenet()
    for rankdir, phase, lrm in (("LR", None, False), ("TB", caffe_pb2.TRAIN, True)):
        graph = draw.get_pydot_graph(net, rankdir, phase=phase, display_lrm=lrm)
        assert draw.to_dot(draw.net_graph(net, rankdir, phase=phase, display_lrm=lrm)) == graph.to_string()


def test_draw_net_to_file(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "lenet.png"
    if shutil.which("dot") is None:
        with pytest.raises(draw.DrawError, match="Graphviz"):
            draw.draw_net_to_file(lenet(), str(out))
        pytest.skip("Graphviz's dot is not installed: only the error was checked")
    draw.draw_net_to_file(lenet(), str(out), "TB", caffe_pb2.TEST, display_lrm=True)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert draw.draw_net(lenet(), "LR", ext="svg").lstrip().startswith(b"<?xml")


def test_missing_pydot_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydot", None)
    monkeypatch.setitem(sys.modules, "pydotplus", None)
    with pytest.raises(ImportError, match="pydot.*Graphviz"):
        draw.get_pydot_graph(lenet(), "LR")
