"""What the PyTorch export refuses, as one-line user errors naming the layer and its type."""
from __future__ import annotations

import pathlib

import pytest

import caffelike
from caffelike.cli import main as cli_main
from caffelike.errors import LayerError
from caffelike.net import Net

from .conftest import GOLDEN

INPUT = 'layer { name: "in" type: "Input" top: "data" top: "label" ' \
        'input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }\n'
NETS = {
    "loss": (INPUT + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
             'inner_product_param { num_output: 4 } }\n'
             'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n',
             "layer 'loss' (SoftmaxWithLoss): loss layers are not part of a deploy export"),
    "data": ('layer { name: "dummy" type: "DummyData" top: "data" '
             'dummy_data_param { shape { dim: 2 dim: 3 } } }\n'
             'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }\n',
             "layer 'dummy' (DummyData): data layers are not part of a deploy export"),
    "uncovered": (INPUT + 'layer { name: "top1" type: "ArgMax" bottom: "data" top: "top1" }\n'
                  'layer { name: "silence" type: "Silence" bottom: "label" }\n',
                  "layer 'top1' (ArgMax): the PyTorch export does not cover layer type 'ArgMax'"),
}


@pytest.mark.parametrize("what", sorted(NETS))
def test_refusals_are_one_line_errors(tmp_path: pathlib.Path, capsys, what: str) -> None:
    text, message = NETS[what]
    model = tmp_path / "deploy.prototxt"
    model.write_text(text)
    assert cli_main(["export", "-model", str(model), "-format", "pytorch", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(model) in err and message in err
    assert not (tmp_path / "out" / "model.py").exists()


def test_pooling_mask_top_is_not_covered() -> None:
    net = Net(str(GOLDEN / "layers" / "Pooling__max_k3s2_mask_top" / "net.prototxt"), caffelike.TEST)
    with pytest.raises(LayerError, match=r"layer 'pooling' \(Pooling\): the PyTorch export does not "
                                         r"cover this layer: only MAX and AVE pooling with one top"):
        net.to_torch()


def test_onnx_only_flags_are_refused_for_pytorch(tmp_path: pathlib.Path, capsys) -> None:
    model = GOLDEN / "nets" / "lenet" / "net.prototxt"
    assert cli_main(["export", "-model", str(model), "-format", "pt2", "--check", "-o", str(tmp_path / "m.pt2")]) == 1
    assert "-format onnx" in capsys.readouterr().err
