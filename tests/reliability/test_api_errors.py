"""The bad-input matrix through the Python API: each mistake raises its documented error class."""
from __future__ import annotations

import pytest

from caffelike.errors import DataError, NetError, PrototxtError, WeightsError

from .helpers import assert_located, edit, layer_line, line_of


def _net(work, phase=0, **kw):
    from caffelike.net import Net

    return Net(str(work / "train_val.prototxt"), phase, **kw)


def test_syntax_error_is_a_prototxt_error(sgd_case):
    edit(sgd_case / "train_val.prototxt", 'name: "conv1"', 'name: "conv1" {{')
    with pytest.raises(PrototxtError) as info:
        _net(sgd_case)
    assert_located(str(info.value), "train_val.prototxt", line_of(sgd_case / "train_val.prototxt", '"conv1" {{'))


def test_unknown_bottom_is_a_net_error(sgd_case):
    edit(sgd_case / "train_val.prototxt", 'bottom: "pool1"', 'bottom: "pool9"')
    with pytest.raises(NetError) as info:
        _net(sgd_case)
    assert_located(str(info.value), "train_val.prototxt", layer_line(sgd_case / "train_val.prototxt", "ip1"),
                   "ip1", "InnerProduct")


def test_truncated_caffemodel_is_a_weights_error(sgd_case):
    from caffelike.io import read_caffemodel

    data = (sgd_case / "init.caffemodel").read_bytes()
    (sgd_case / "cut.caffemodel").write_bytes(data[: len(data) - 7])
    with pytest.raises(WeightsError) as info:
        read_caffemodel(str(sgd_case / "cut.caffemodel"))
    assert str(info.value).split(":")[0].endswith("cut.caffemodel")


def test_weight_shape_mismatch_is_a_weights_error(sgd_case):
    edit(sgd_case / "train_val.prototxt", "num_output: 32", "num_output: 16")
    with pytest.raises(WeightsError) as info:
        _net(sgd_case, weights=str(sgd_case / "init.caffemodel"))
    assert_located(str(info.value), "train_val.prototxt", layer_line(sgd_case / "train_val.prototxt", "ip1"),
                   "ip1", "InnerProduct")


def test_missing_image_is_a_data_error(image_case):
    edit(image_case / "images.txt", "img00_c0.png 0", "img99_c0.png 0")
    with pytest.raises(DataError) as info:
        net = _net(image_case)
        net.run()
    assert_located(str(info.value), "images.txt", 1, "data", "ImageData")
