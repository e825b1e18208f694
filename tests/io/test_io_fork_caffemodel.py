"""Weights written by Caffe forks (issue 16): their layer params sit under the fork's field
numbers, which our schema may give to another message, of another wire type or another
content. The caffemodels here are encoded by hand on the protobuf wire (a tiny encoder below,
independent of caffelike and of the protobuf runtime), with the param sections the forks
really write (field numbers and messages from the forks' src/caffe/proto/caffe.proto:
alexgkendall/caffe-segnet, hszhao/PSPNet; pooling ``ceil_mode`` 13 of the PR-3057 forks).
Names, types and blobs must load exactly; a section that cannot be decoded is left out.
"""
from __future__ import annotations

import logging
import pathlib
import re
import struct

import numpy as np
import pytest

import caffelike
from caffelike.errors import WeightsError
from caffelike.io import load_weights, read_caffemodel
from caffelike.io.caffemodel import read_binary_net
from caffelike.proto import caffe_pb2


# -- a tiny protobuf wire encoder ---------------------------------------------------------------
def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def vint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def ln(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def text(number: int, value: str) -> bytes:
    return ln(number, value.encode())


def f32(number: int, value: float) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<f", value)


def f64(number: int, value: float) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<d", value)


def group(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 3) + payload + varint(number << 3 | 4)


def blob(array: np.ndarray, extra: bytes = b"") -> bytes:
    """BlobProto: shape (7) { dim (1), packed }, data (5), packed floats."""
    shape = ln(1, b"".join(varint(d) for d in array.shape))
    return ln(7, shape) + ln(5, array.astype("<f4").tobytes()) + extra


def layer(name: str, type_: str, blobs: list[np.ndarray], *params: bytes,
          bottom: str = "data", top: str | None = None) -> bytes:
    """A V2 ``layer`` (NetParameter field 100): name 1, type 2, bottom 3, top 4, blobs 7."""
    body = text(1, name) + text(2, type_) + text(3, bottom) + text(4, top or name)
    return ln(100, body + b"".join(params) + b"".join(ln(7, blob(b)) for b in blobs))


def v1_layer(name: str, type_: int, blobs: list[np.ndarray], *params: bytes,
             bottom: str = "data") -> bytes:
    """A V1 ``layers`` (NetParameter field 2): bottom 2, top 3, name 4, type 5 (enum), blobs 6."""
    body = text(2, bottom) + text(3, name) + text(4, name) + vint(5, type_)
    return ln(2, body + b"".join(params) + b"".join(ln(6, blob(b)) for b in blobs))


# -- the forks' param sections (field number in LayerParameter: the fork's message) ----------
SEGNET_UPSAMPLE = ln(137, vint(1, 2) + vint(4, 1) + vint(6, 56))  # scale, pad_out_h, upsample_h
SEGNET_DENSE_IMAGE_DATA = ln(138, text(1, "train.txt") + vint(2, 4) + vint(4, 1) + text(8, "m.binaryproto"))
SEGNET_BN = ln(45, vint(3, 1) + ln(1, text(1, "constant") + f32(2, 1.0)))  # bn_mode, scale_filler
PSP_INTERP = ln(143, vint(1, 65) + vint(2, 65) + vint(3, 8))  # height, width, zoom_factor
PSP_SEG_ACCURACY = ln(144, vint(1, 2) + vint(2, 255) + vint(2, 0))  # metric, ignore_label x2
# prefix (a string) where our parameter_param (145) holds a BlobShape: not a valid encoding of it
PSP_MAT_WRITE = ln(145, text(1, "features/fc8") + text(2, "list.txt") + vint(4, 1))
PSP_DENSE_CRF = ln(146, vint(1, 10) + f32(2, 80.0) + f32(2, 80.0) + f32(5, 13.0))
PSP_DOMAIN_TRANSFORM = ln(147, vint(1, 3) + f32(2, 50.0) + f32(3, 5.0))
PSP_ADAPTIVE_BIAS = ln(148, vint(1, 2) + f32(2, 0.2) + f32(3, 0.2) + vint(4, 0))
PSP_BN = ln(152, ln(1, text(1, "constant")) + f32(3, 0.95) + vint(5, 1))
POOL_CEIL_MODE = ln(121, vint(1, 0) + vint(2, 3) + vint(3, 2) + vint(13, 0))  # pool, kernel, stride, ceil_mode
FORK_SECTIONS = {
    "segnet_upsample_137": SEGNET_UPSAMPLE, "segnet_dense_image_data_138": SEGNET_DENSE_IMAGE_DATA,
    "segnet_bn_45": SEGNET_BN, "psp_interp_143": PSP_INTERP, "psp_seg_accuracy_144": PSP_SEG_ACCURACY,
    "psp_mat_write_145": PSP_MAT_WRITE, "psp_dense_crf_146": PSP_DENSE_CRF,
    "psp_domain_transform_147": PSP_DOMAIN_TRANSFORM, "psp_adaptive_bias_148": PSP_ADAPTIVE_BIAS,
    "psp_bn_152": PSP_BN, "pooling_ceil_mode_13": POOL_CEIL_MODE,
}
# A fork's param at a V1LayerParameter number our schema gives to dummy_data_param (26), whose
# field 1 is a FillerParameter: a string there does not decode.
V1_FORK_PARAM = ln(26, text(1, "features/fc8") + vint(2, 3))
# A fork's NetParameter field at our input_shape (8), a BlobShape whose packed dims are cut short.
NET_FORK_FIELD = ln(8, ln(1, b"\x96"))
# A V1 LayerType value of a fork's enum (BVLC's ends at 39, DECONVOLUTION), one our enum lacks.
V1_FORK_TYPE = max(caffe_pb2.V1LayerParameter.LayerType.values()) + 1

RNG = np.random.default_rng(16)
CONV_W, CONV_B = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), RNG.standard_normal(4).astype(np.float32)
IP_W, IP_B = RNG.standard_normal((5, 64)).astype(np.float32), RNG.standard_normal(5).astype(np.float32)

DEPLOY = """name: "forknet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" inner_product_param { num_output: 5 } }
"""


def _write(tmp_path: pathlib.Path, *layers: bytes, extra: bytes = b"") -> pathlib.Path:
    path = tmp_path / "fork.caffemodel"
    path.write_bytes(text(1, "forknet") + extra + b"".join(layers))
    return path


def _v2_model(tmp_path: pathlib.Path, *sections: bytes) -> pathlib.Path:
    """conv1 and ip carry the fork sections next to their blobs; fork layers hold them too."""
    return _write(tmp_path,
                  layer("conv1", "Convolution", [CONV_W, CONV_B], *sections),
                  layer("up", "Upsample", [], SEGNET_UPSAMPLE, bottom="conv1"),
                  layer("interp", "Interp", [], PSP_INTERP, bottom="up"),
                  layer("ip", "InnerProduct", [IP_W, IP_B], *reversed(sections), bottom="conv1"))


def _assert_exact(weights: dict[str, list[np.ndarray]]) -> None:
    assert list(weights) == ["conv1", "ip"]
    for got, want in zip(weights["conv1"] + weights["ip"], [CONV_W, CONV_B, IP_W, IP_B]):
        assert got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("name", FORK_SECTIONS)
def test_each_fork_section_leaves_weights_exact(name: str, tmp_path: pathlib.Path) -> None:
    path = _v2_model(tmp_path, FORK_SECTIONS[name])
    _assert_exact(load_weights(path))
    net = read_caffemodel(path)
    assert [(l.name, l.type, len(l.blobs)) for l in net.layer] == [
        ("conv1", "Convolution", 2), ("up", "Upsample", 0), ("interp", "Interp", 0),
        ("ip", "InnerProduct", 2)]


def test_all_fork_sections_at_once_v2(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _v2_model(tmp_path, *FORK_SECTIONS.values())
    with caplog.at_level(logging.WARNING, logger="caffelike"):
        _assert_exact(load_weights(path))
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert left_out == [
        f"{path}: left out param sections that do not decode with this schema (a Caffe fork wrote "
        "them under numbers our schema gives to other fields): layer 'conv1': field 145 (our "
        "parameter_param); layer 'ip': field 145 (our parameter_param); layer names, types and "
        "blobs are read"]


def test_fork_weights_copy_into_a_net(tmp_path: pathlib.Path) -> None:
    """pycaffe's Net(proto, weights), Net.copy_from and the -weights path all read them."""
    path = _v2_model(tmp_path, *FORK_SECTIONS.values())
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(DEPLOY)
    for net in (caffelike.Net(str(proto), caffelike.TEST, weights=str(path)),
                caffelike.Net(str(proto), str(path), caffelike.TEST)):
        assert np.array_equal(net.params["conv1"][0].data, CONV_W)
        assert np.array_equal(net.params["conv1"][1].data, CONV_B)
        assert np.array_equal(net.params["ip"][0].data, IP_W)
        assert np.array_equal(net.params["ip"][1].data, IP_B)
    net = caffelike.Net(str(proto), caffelike.TEST)
    net.copy_from(str(path))
    assert np.array_equal(net.params["ip"][0].data, IP_W)


def test_fork_weights_through_the_cli(tmp_path: pathlib.Path, capfd: pytest.CaptureFixture) -> None:
    """``caffelike test -weights``: on the zero input, conv1 gives its bias at every pixel."""
    from caffelike.cli import main

    path = _v2_model(tmp_path, *FORK_SECTIONS.values())
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(DEPLOY)
    assert main(["test", "-model", str(proto), "-weights", str(path), "-iterations", "1"]) == 0
    scores = [float(m.group(1)) for m in re.finditer(r"\] ip = (\S+)$", capfd.readouterr().err, re.M)]
    want = IP_W.astype(np.float64) @ np.repeat(CONV_B.astype(np.float64), 16) + IP_B
    np.testing.assert_allclose(scores, want, rtol=1e-5)  # logged with 6 significant digits


def test_v1_layers_with_fork_params_and_type(tmp_path: pathlib.Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """V1 ``layers``: CONVOLUTION is 4, INNER_PRODUCT 14 in the V1 enum."""
    path = _write(tmp_path,
                  v1_layer("conv1", 4, [CONV_W, CONV_B], V1_FORK_PARAM, ln(60, vint(1, 7))),
                  v1_layer("bn", V1_FORK_TYPE, [np.ones(4, np.float32)], ln(41, text(1, "x")),
                           bottom="conv1"),
                  v1_layer("ip", 14, [IP_W, IP_B], V1_FORK_PARAM, bottom="conv1"),
                  extra=NET_FORK_FIELD)
    with caplog.at_level(logging.WARNING, logger="caffelike"):
        weights = load_weights(path)
    assert np.array_equal(weights.pop("bn")[0], np.ones(4, np.float32))
    _assert_exact(weights)
    assert any("the net: field 8 (our input_shape); layer 'conv1': field 26 (our dummy_data_param); "
               "layer 'ip': field 26" in r.getMessage() for r in caplog.records)
    net = read_caffemodel(path)
    # the fork's enum value is not ours: no type, as Caffe's upgrade of it gives ("")
    assert [(l.name, l.type) for l in net.layer] == [("conv1", "Convolution"), ("bn", ""),
                                                      ("ip", "InnerProduct")]
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(DEPLOY)
    loaded = caffelike.Net(str(proto), caffelike.TEST, weights=str(path))
    assert np.array_equal(loaded.params["conv1"][0].data, CONV_W)


def test_unknown_fields_in_net_layer_and_blob(tmp_path: pathlib.Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Fields no schema here knows (varint, 64-bit, length-delimited, group) at every level."""
    unknown = vint(990, 3) + f64(991, 2.5) + text(992, "fork") + group(993, vint(1, 1))
    path = tmp_path / "unknown.caffemodel"
    path.write_bytes(text(1, "forknet") + unknown
                     + ln(100, text(1, "conv1") + text(2, "Convolution") + unknown
                          + ln(7, blob(CONV_W, unknown)) + ln(7, blob(CONV_B)))
                     + ln(100, text(1, "ip") + text(2, "InnerProduct") + ln(7, blob(IP_W))
                          + ln(7, blob(IP_B, unknown)) + unknown))
    with caplog.at_level(logging.WARNING, logger="caffelike"):
        _assert_exact(load_weights(path))
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: ignored fields unknown to BVLC Caffe's caffe.proto (written by a Caffe fork), "
        "by field number: caffe.LayerParameter: 990, 991, 992, 993; caffe.NetParameter: 990, 991, "
        "992, 993"]


def test_undecodable_sections_stop_the_upgrade_command(tmp_path: pathlib.Path) -> None:
    """upgrade_net_proto_binary rewrites the whole file: it refuses to drop a fork's section."""
    from caffelike.cli import main

    path = _write(tmp_path, v1_layer("conv1", 4, [CONV_W, CONV_B], V1_FORK_PARAM))
    with pytest.raises(WeightsError) as info:
        read_binary_net(path, tolerant=False)
    assert str(info.value) == (
        f"{path}: cannot decode a param section with this schema (written by a Caffe fork under "
        "a number our schema gives to another field): layer 'conv1': field 26 (our "
        "dummy_data_param); rewriting the file would lose it")
    assert main(["upgrade_net_proto_binary", str(path), str(tmp_path / "out.caffemodel")]) != 0
    assert not (tmp_path / "out.caffemodel").exists()


def test_undecodable_blob_and_corrupt_file(tmp_path: pathlib.Path) -> None:
    bad_blob = ln(7, ln(7, ln(1, b"\xff")))  # BlobShape.dim: a packed varint cut short
    path = _write(tmp_path, ln(100, text(1, "conv1") + text(2, "Convolution") + PSP_MAT_WRITE
                               + bad_blob))
    with pytest.raises(WeightsError) as info:
        load_weights(path)
    assert str(info.value) == (f"{path}: layer 'conv1': blob 0 of this layer is not a valid "
                               "BlobProto; its weights cannot be read")
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(_v2_model(tmp_path, PSP_MAT_WRITE).read_bytes()[:-7])
    with pytest.raises(WeightsError, match="truncated or corrupt protobuf data"):
        load_weights(truncated)
