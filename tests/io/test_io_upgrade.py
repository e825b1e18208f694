"""Legacy upgrades equal real Caffe's (golden/upgrade: `upgrade_net_proto_text` outputs)."""
from __future__ import annotations

import csv
import pathlib

import pytest

from caffelike.errors import PrototxtError
from caffelike.io import parse_net, read_net, read_text_proto
from caffelike.io.prototxt import to_text
from caffelike.io.upgrade import net_needs_upgrade, upgrade_net
from caffelike.proto import caffe_pb2

TESTS = pathlib.Path(__file__).resolve().parents[1]
CORPUS = TESTS / "data" / "corpus"
GOLDEN = TESTS / "golden" / "upgrade"
ROWS = [r for r in csv.DictReader((GOLDEN / "index.tsv").open(), delimiter="\t") if r["result"] == "ok"]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r["input"])
def test_upgrade_equals_caffe(row: dict) -> None:
    net, _ = read_net(CORPUS / row["input"])
    expected_path = GOLDEN / row["caffe_output"]
    expected = read_text_proto(expected_path, caffe_pb2.NetParameter)
    assert [(l.name, l.type, list(l.bottom), list(l.top)) for l in net.layer] == \
        [(l.name, l.type, list(l.bottom), list(l.top)) for l in expected.layer]
    assert net == expected
    # and the text is byte-identical to what Caffe's tool wrote
    assert to_text(net) == expected_path.read_text()


def test_current_nets_need_no_upgrade() -> None:
    for row in ROWS:
        expected = read_text_proto(GOLDEN / row["caffe_output"], caffe_pb2.NetParameter)
        assert not net_needs_upgrade(expected), row["input"]


def test_v0_padding_layer_folds_into_conv() -> None:
    text = """input: "data"
    layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
    layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 } bottom: "pad1" top: "conv1" }
    """
    net, _ = parse_net(text, "v0.prototxt")
    assert [l.name for l in net.layer] == ["conv1"]
    conv = net.layer[0]
    assert conv.type == "Convolution" and list(conv.bottom) == ["data"]
    assert list(conv.convolution_param.pad) == [2] and list(conv.convolution_param.kernel_size) == [3]


def test_v0_padding_into_relu_is_refused() -> None:
    text = """input: "data"
    layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
    layers { layer { name: "relu" type: "relu" } bottom: "pad1" top: "r" }
    """
    with pytest.raises(PrototxtError) as info:
        parse_net(text, "v0.prototxt")
    assert str(info.value) == ("v0.prototxt:3: layer 'relu' (relu): a V0 padding layer feeds "
                               "layer type 'relu'; only conv and pool layers can take a padding "
                               "layer's output")


def test_v0_unknown_type_and_bottom() -> None:
    with pytest.raises(PrototxtError, match=r"^v0.prototxt:1: layer 'x' \(bogus\): unknown V0 layer type 'bogus'; known: "):
        parse_net('layers { layer { name: "x" type: "bogus" } }', "v0.prototxt")
    with pytest.raises(PrototxtError, match=r"^v0.prototxt:1: layer 'x' \(relu\): unknown bottom blob 'nope'"):
        parse_net('layers { layer { name: "x" type: "relu" } bottom: "nope" top: "y" }', "v0.prototxt")


def test_mixed_layer_and_layers_is_refused() -> None:
    text = 'layer { name: "a" type: "Input" top: "a" }\nlayers { name: "b" type: RELU bottom: "a" top: "a" }\n'
    with pytest.raises(PrototxtError) as info:
        parse_net(text, "mix.prototxt")
    assert str(info.value).startswith("mix.prototxt:2: layer 'b' (ReLU): the net mixes current 'layer { type: \"Type\" }' "
                                      "blocks with legacy 'layers { type: ENUM }' blocks")


def test_v1_params_and_share_modes() -> None:
    text = """layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "y"
      param: "w" param: "b" blob_share_mode: PERMISSIVE blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
      inner_product_param { num_output: 3 } loss_weight: 0.5 }"""
    net, _ = parse_net(text, "v1.prototxt")
    layer = net.layer[0]
    assert layer.type == "InnerProduct"
    assert [(p.name, p.lr_mult, p.decay_mult) for p in layer.param] == [("w", 1, 1), ("b", 2, 0)]
    assert layer.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not layer.param[1].HasField("share_mode")
    assert list(layer.loss_weight) == [0.5]


def test_v1_data_transform_fields_move() -> None:
    text = """layers { name: "d" type: DATA top: "data" top: "label"
      data_param { source: "db" batch_size: 4 scale: 0.5 mean_file: "m.binaryproto" crop_size: 3 mirror: true } }"""
    net, _ = parse_net(text, "v1.prototxt")
    layer = net.layer[0]
    assert layer.type == "Data"
    assert not layer.data_param.HasField("scale") and layer.data_param.batch_size == 4
    t = layer.transform_param
    assert (t.scale, t.mean_file, t.crop_size, t.mirror) == (0.5, "m.binaryproto", 3, True)


def test_input_dim_and_input_shape() -> None:
    net, _ = parse_net('input: "a" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4\n'
                       'input: "b" input_dim: 5 input_dim: 6 input_dim: 7 input_dim: 8\n'
                       'layer { name: "r" type: "ReLU" bottom: "a" top: "r" }', "in.prototxt")
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["a", "b"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert not len(net.input) and not len(net.input_dim)
    net, _ = parse_net('input: "a" input_shape { dim: 2 dim: 3 }', "in.prototxt")
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[2, 3]]


def test_input_without_dims_is_dropped() -> None:
    # legacy caffemodels: input names without shapes are simply stripped
    net = caffe_pb2.NetParameter()
    net.input.append("data")
    net.layer.add(name="r", type="ReLU")
    upgrade_net(net)
    assert [l.name for l in net.layer] == ["r"] and not len(net.input)


def test_input_dim_count_checked() -> None:
    with pytest.raises(PrototxtError, match=r"1 legacy inputs need 4 input_dim values"):
        parse_net('input: "a" input_dim: 1 input_dim: 2\nlayer { name: "r" type: "ReLU" bottom: "a" top: "r" }',
                  "in.prototxt")


def test_batchnorm_three_params_get_zero_mults() -> None:
    net, _ = parse_net('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"\n'
                       '  param { lr_mult: 1 } param { lr_mult: 1 decay_mult: 2 } param { lr_mult: 1 } }\n'
                       'layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "y" param { lr_mult: 1 } }',
                       "bn.prototxt")
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3
    assert net.layer[1].param[0].lr_mult == 1
