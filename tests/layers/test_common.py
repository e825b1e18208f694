"""The common layer family (layers/common.py, shape.py, inputs.py) against real Caffe.

Every golden case of these types runs forward and backward at the layer level (the cases
without ``force_backward`` - Filter, Embed, BatchReindex - hold layer-level gradients, which
is what ``run_case`` checks). Extra tests pin Caffe behaviours the golden cases do not cover;
their expected values come from Caffe's formulas, with the source file named beside each.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from caffelike.errors import LayerError
from caffelike.layers import LAYERS
from caffelike.proto import caffe_pb2

from .golden_case import GOLDEN_LAYERS, build_layer, cases_for, load_case, run_case

COMMON_TYPES = (
    "ArgMax", "BatchReindex", "Bias", "Concat", "Crop", "DummyData", "Eltwise", "Embed",
    "Filter", "Flatten", "InnerProduct", "Parameter", "Reduction", "Reshape", "Scale",
    "Silence", "Slice", "Softmax", "Split", "Tile",
)
UNTESTED_BY_GOLDEN = ("Input",)  # every golden net feeds its bottoms through Input layers


@pytest.mark.parametrize("case", cases_for(*COMMON_TYPES))
def test_golden(case: str) -> None:
    run_case(case)


@pytest.mark.parametrize("case", cases_for(*COMMON_TYPES))
def test_golden_top_shapes(case: str) -> None:
    """Shape inference (no data) gives the top shapes Caffe reported."""
    c = load_case(case)
    layer = build_layer(c)
    bottoms = [tuple(c.meta["bottoms"][b]) for b in c.bottom_names]
    want = [tuple(c.meta["tops"][name]) for name in c.top_names]
    if c.type == "Filter":  # filter_layer.cpp: before any forward the tops keep the full batch
        want = [tuple(b) for b in bottoms[:-1]]
    assert layer.top_shapes(bottoms) == want


def make(text: str, bottom_shapes=(), phase: int = caffe_pb2.TEST):
    """Build one layer from its prototxt text."""
    lp = text_format.Parse(text, caffe_pb2.LayerParameter())
    return LAYERS.get(lp.type).cls(lp, [tuple(s) for s in bottom_shapes], phase)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_all_types_registered() -> None:
    for name in (*COMMON_TYPES, *UNTESTED_BY_GOLDEN):
        assert LAYERS.get(name).cls.caffe_type == name


# -- ArgMax (argmax_layer.cpp: partial_sort with std::greater on (value, index) pairs) ---------
def test_argmax_ties_prefer_larger_index() -> None:
    layer = make('type: "ArgMax" name: "a" argmax_param { top_k: 3 out_max_val: true }',
                 [(1, 4)])
    (out,) = layer(t([[2.0, 5.0, 5.0, 2.0]]))
    assert out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out.numpy(), [[[2, 1, 3], [5, 5, 2]]])


def test_argmax_axis_out_max_val_gives_values_only() -> None:
    layer = make('type: "ArgMax" name: "a" argmax_param { axis: 0 out_max_val: true }',
                 [(3, 2)])
    (out,) = layer(t([[1, 9], [7, 2], [3, 4]]))
    np.testing.assert_array_equal(out.numpy(), [[7, 9]])


def test_argmax_top_k_too_large() -> None:
    with pytest.raises(LayerError, match="top_k"):
        make('type: "ArgMax" name: "a" argmax_param { top_k: 5 }', [(2, 4)])


# -- Eltwise (eltwise_layer.cpp) ---------------------------------------------------------------
def test_eltwise_max_tie_routing() -> None:
    # a vs b: a tie goes to b; a later bottom must be strictly larger to win.
    layer = make('type: "Eltwise" name: "e" eltwise_param { operation: MAX }',
                 [(3,), (3,), (3,)])
    a = t([1.0, 2.0, 0.0]).requires_grad_()
    b = t([1.0, 0.0, 3.0]).requires_grad_()
    c = t([1.0, 2.0, 3.0]).requires_grad_()
    (out,) = layer(a, b, c)
    out.backward(t([10.0, 20.0, 30.0]))
    np.testing.assert_array_equal(out.detach().numpy(), [1, 2, 3])
    np.testing.assert_array_equal(a.grad.numpy(), [0, 20, 0])
    np.testing.assert_array_equal(b.grad.numpy(), [10, 0, 30])
    np.testing.assert_array_equal(c.grad.numpy(), [0, 0, 0])


def test_eltwise_prod_unstable_grad_is_top_over_bottom() -> None:
    layer = make('type: "Eltwise" name: "e" eltwise_param { operation: PROD '
                 'stable_prod_grad: false }', [(2,), (2,)])
    a = t([0.0, 2.0]).requires_grad_()
    b = t([3.0, 4.0]).requires_grad_()
    (out,) = layer(a, b)
    out.backward(t([1.0, 1.0]))
    assert torch.isnan(a.grad[0])  # 0/0, as Caffe's caffe_div gives
    np.testing.assert_array_equal(a.grad[1:].numpy(), [4])
    np.testing.assert_array_equal(b.grad.numpy(), [0, 2])


def test_eltwise_prod_stable_grad_gradcheck() -> None:
    # With stable_prod_grad (the default) Caffe's gradient is the exact one.
    layer = make('type: "Eltwise" name: "e" eltwise_param { operation: PROD }',
                 [(4,), (4,), (4,)])
    xs = [torch.randn(4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda *a: layer(*a)[0], xs)


def test_eltwise_coeff_checks() -> None:
    with pytest.raises(LayerError, match="coeff"):
        make('type: "Eltwise" name: "e" bottom: "a" bottom: "b" '
             'eltwise_param { coeff: 1 }', [(2,), (2,)])
    with pytest.raises(LayerError, match="SUM"):
        make('type: "Eltwise" name: "e" bottom: "a" bottom: "b" '
             'eltwise_param { operation: PROD coeff: 1 coeff: 2 }', [(2,), (2,)])


# -- Reshape / Flatten (reshape_layer.cpp, flatten_layer.cpp) ----------------------------------
@pytest.mark.parametrize("param, shape, want", [
    ("shape { dim: 0 dim: -1 }", (2, 3, 4), (2, 12)),
    ("shape { dim: 1 } axis: -1", (2, 3), (2, 3, 1)),       # -1: after the last axis
    ("shape { dim: 1 } axis: 0 num_axes: 0", (2, 3), (1, 2, 3)),
    ("shape { dim: -1 } axis: 1 num_axes: 2", (2, 3, 4, 5), (2, 12, 5)),
    ("shape { } axis: 1 num_axes: 1", (2, 1, 5), (2, 5)),
])
def test_reshape_shapes(param: str, shape, want) -> None:
    layer = make(f'type: "Reshape" name: "r" reshape_param {{ {param} }}', [shape])
    assert layer.top_shapes([shape]) == [want]


def test_reshape_errors() -> None:
    with pytest.raises(LayerError, match="more than one -1"):
        make('type: "Reshape" name: "r" reshape_param { shape { dim: -1 dim: -1 } }', [(4,)])
    layer = make('type: "Reshape" name: "r" reshape_param { shape { dim: 5 dim: -1 } }', [(4, 3)])
    with pytest.raises(LayerError, match="divisible"):
        layer.top_shapes([(4, 3)])


@pytest.mark.parametrize("type_", ["Reshape", "Flatten"])
def test_reshape_flatten_refuse_in_place(type_: str) -> None:
    with pytest.raises(LayerError, match="in-place"):
        make(f'type: "{type_}" name: "r" bottom: "x" top: "x"', [(2, 3)])


def test_flatten_negative_end_axis() -> None:
    layer = make('type: "Flatten" name: "f" flatten_param { axis: 0 end_axis: -2 }',
                 [(2, 3, 4)])
    assert layer.top_shapes([(2, 3, 4)]) == [(6, 4)]


# -- Concat / Slice legacy dims (concat_layer.cpp, slice_layer.cpp) ----------------------------
def test_concat_legacy_concat_dim() -> None:
    layer = make('type: "Concat" name: "c" concat_param { concat_dim: 0 }', [(1, 2), (2, 2)])
    assert layer.top_shapes([(1, 2), (2, 2)]) == [(3, 2)]
    with pytest.raises(LayerError, match="not both"):
        make('type: "Concat" name: "c" concat_param { concat_dim: 0 axis: 1 }',
             [(1, 2), (2, 2)]).top_shapes([(1, 2), (2, 2)])


def test_slice_legacy_and_errors() -> None:
    layer = make('type: "Slice" name: "s" top: "a" top: "b" slice_param { slice_dim: 0 }',
                 [(4, 3)])
    assert layer.top_shapes([(4, 3)]) == [(2, 3), (2, 3)]
    layer = make('type: "Slice" name: "s" top: "a" top: "b" top: "c"', [(2, 5)])
    with pytest.raises(LayerError, match="evenly"):
        layer.top_shapes([(2, 5)])


# -- Crop (crop_layer.cpp) ---------------------------------------------------------------------
def test_crop_out_of_bounds() -> None:
    with pytest.raises(LayerError, match="out of bounds"):
        make('type: "Crop" name: "c" crop_param { axis: 2 offset: 3 }',
             [(1, 1, 5, 5), (1, 1, 4, 4)])


def test_crop_default_offset_zero() -> None:
    layer = make('type: "Crop" name: "c"', [(1, 1, 3, 3), (1, 1, 2, 2)])
    x = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3)
    (out,) = layer(x, torch.zeros(1, 1, 2, 2))
    np.testing.assert_array_equal(out.numpy().ravel(), [0, 1, 3, 4])


# -- Scale / Bias (scale_layer.cpp, bias_layer.cpp) --------------------------------------------
def test_scale_defaults_and_bias_blob() -> None:
    layer = make('type: "Scale" name: "s" scale_param { bias_term: true num_axes: -1 }',
                 [(2, 3, 4)])
    assert [tuple(b.shape) for b in layer.blobs] == [(3, 4), (3, 4)]
    assert torch.all(layer.blobs[0] == 1) and torch.all(layer.blobs[1] == 0)


def test_scale_scalar_and_two_bottoms_with_bias() -> None:
    layer = make('type: "Scale" name: "s" scale_param { num_axes: 0 }', [(2, 3)])
    assert tuple(layer.blobs[0].shape) == ()
    layer = make('type: "Scale" name: "s" scale_param { axis: 0 bias_term: true }',
                 [(2, 3), (2,)])
    assert [tuple(b.shape) for b in layer.blobs] == [(2,)]
    with torch.no_grad():
        layer.blobs[0].copy_(t([1.0, -1.0]))
    (out,) = layer(t([[1, 2, 3], [4, 5, 6]]), t([2.0, 3.0]))
    np.testing.assert_array_equal(out.detach().numpy(), [[3, 5, 7], [11, 14, 17]])


def test_bias_shape_mismatch() -> None:
    layer = make('type: "Bias" name: "b"', [(2, 3), (4,)])
    with pytest.raises(LayerError, match="does not match"):
        layer.top_shapes([(2, 3), (4,)])


# -- InnerProduct (inner_product_layer.cpp) ----------------------------------------------------
def test_inner_product_blob_shapes_and_k_check() -> None:
    layer = make('type: "InnerProduct" name: "ip" inner_product_param { num_output: 5 '
                 'transpose: true }', [(2, 3, 4)])
    assert [tuple(b.shape) for b in layer.blobs] == [(12, 5), (5,)]
    with pytest.raises(LayerError, match="does not match"):
        layer.top_shapes([(2, 3, 5)])


# -- Reduction (reduction_layer.cpp) -----------------------------------------------------------
def test_reduction_negative_axis_mean() -> None:
    layer = make('type: "Reduction" name: "r" reduction_param { operation: MEAN axis: -1 '
                 'coeff: 2 }', [(2, 4)])
    (out,) = layer(t([[1, 2, 3, 4], [0, 0, 0, 8]]))
    np.testing.assert_allclose(out.numpy(), [5, 4])


# -- Tile, Filter, BatchReindex, Embed ----------------------------------------------------------
def test_tile_requires_tiles() -> None:
    with pytest.raises(LayerError, match="tiles"):
        make('type: "Tile" name: "t"', [(2, 3)])


def test_filter_top_shapes_before_forward_keep_batch() -> None:
    # filter_layer.cpp: the first Reshape sizes the tops with the full batch.
    layer = make('type: "Filter" name: "f" bottom: "x" bottom: "s" top: "y"', [(5, 2), (5, 1)])
    assert layer.top_shapes([(5, 2), (5, 1)]) == [(5, 2)]
    with pytest.raises(LayerError, match="selector"):
        layer.top_shapes([(5, 2), (5, 2)])


def test_batch_reindex_index_out_of_range() -> None:
    layer = make('type: "BatchReindex" name: "b"', [(2, 3), (2,)])
    with pytest.raises(LayerError, match="out of range"):
        layer(torch.zeros(2, 3), t([0.0, 2.0]))
    with pytest.raises(LayerError, match="out of range"):  # checked before truncation
        layer(torch.zeros(2, 3), t([-0.5, 1.0]))


def test_embed_index_out_of_range() -> None:
    layer = make('type: "Embed" name: "e" embed_param { input_dim: 3 num_output: 2 }', [(2,)])
    with pytest.raises(LayerError, match="out of range"):
        layer(t([0.0, 3.0]))


# -- Input, DummyData, Parameter (input_layer.cpp, dummy_data_layer.cpp, parameter_layer.hpp) ---
def test_input_shapes() -> None:
    layer = make('type: "Input" name: "in" top: "a" top: "b" '
                 'input_param { shape { dim: 2 dim: 3 } }')
    assert layer.top_shapes([]) == [(2, 3), (2, 3)]
    a, b = layer()
    assert a.shape == (2, 3) and torch.all(a == 0)
    layer = make('type: "Input" name: "in" top: "a" top: "b" '
                 'input_param { shape { dim: 1 } shape { dim: 4 dim: 5 } }')
    assert layer.top_shapes([]) == [(1,), (4, 5)]
    with pytest.raises(LayerError, match="shapes for 3 tops"):
        make('type: "Input" name: "in" top: "a" top: "b" top: "c" '
             'input_param { shape { dim: 1 } shape { dim: 2 } }')


def test_dummy_data_legacy_dims_and_refill() -> None:
    layer = make('type: "DummyData" name: "d" top: "a" top: "b" dummy_data_param { '
                 'num: 2 channels: 3 height: 4 width: 5 height: 1 '
                 'data_filler { type: "constant" value: 2 } data_filler { type: "uniform" } }')
    assert layer.top_shapes([]) == [(2, 3, 4, 5), (2, 3, 1, 5)]
    a1, b1 = layer()
    a2, b2 = layer()
    assert torch.all(a1 == 2) and torch.equal(a1, a2)
    assert not torch.equal(b1, b2)  # non-constant fillers draw again on every forward
    assert float(b1.min()) >= 0 and float(b1.max()) <= 1
    with pytest.raises(LayerError, match="'channels'"):
        make('type: "DummyData" name: "d" top: "a" dummy_data_param { num: 1 height: 1 '
             'width: 1 }')


def test_parameter_top_is_blob() -> None:
    layer = make('type: "Parameter" name: "p" parameter_param { shape { dim: 2 } }')
    assert layer.top_shapes([]) == [(2,)]
    (top,) = layer()
    top.backward(t([1.0, 2.0]))
    np.testing.assert_array_equal(layer.blobs[0].grad.numpy(), [1, 2])


def test_split_and_silence() -> None:
    layer = make('type: "Split" name: "s" top: "a" top: "b" top: "c"', [(2,)])
    x = t([1.0, 2.0]).requires_grad_()
    tops = layer(x)
    assert len(tops) == 3
    sum(top * w for top, w in zip(tops, (1.0, 2.0, 3.0))).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6, 6])
    assert make('type: "Silence" name: "s"', [(2,)])(x) == []


# -- Shapes of real public nets (tests/golden/shapes: blob and param shapes real Caffe built) ---
SHAPES = GOLDEN_LAYERS.parent / "shapes"


def _v2_shape_nets() -> list[str]:
    names = []
    for path in sorted(SHAPES.glob("*.json")):
        if path.name in ("index.json", "skipped.json"):
            continue
        if json.loads(path.read_text()).get("format") == "V2":
            names.append(path.name)
    return names


@pytest.mark.parametrize("net_json", _v2_shape_nets())
def test_real_net_shapes(net_json: str) -> None:
    """Top and param shapes of every common-family layer of a real (V2) net, layer by layer."""
    record = json.loads((SHAPES / net_json).read_text())
    net = text_format.Parse((SHAPES / record["prototxt_copy"]).read_text(),
                            caffe_pb2.NetParameter())
    by_name = {lp.name: lp for lp in net.layer}
    blobs = {name: tuple(shape) for name, shape in record["blobs"]}
    phase = caffe_pb2.TRAIN if record.get("phase") == "TRAIN" else caffe_pb2.TEST
    checked = 0
    for entry in record["layers"]:
        if entry["type"] not in COMMON_TYPES + UNTESTED_BY_GOLDEN:
            continue
        lp = by_name.get(entry["name"])
        if lp is None:  # a Split Caffe inserted, or an Input made from legacy input fields
            lp = caffe_pb2.LayerParameter(name=entry["name"], type=entry["type"],
                                          bottom=entry["bottoms"], top=entry["tops"])
            if entry["type"] == "Input":
                for top in entry["tops"]:
                    lp.input_param.shape.add().dim.extend(blobs[top])
        else:  # the inserted Splits renamed some bottoms
            original, lp = lp, caffe_pb2.LayerParameter()
            lp.CopyFrom(original)
            del lp.bottom[:]
            lp.bottom.extend(entry["bottoms"])
        bottoms = [blobs[b] for b in entry["bottoms"]]
        layer = LAYERS.get(lp.type).cls(lp, bottoms, phase)
        where = f"{net_json}: layer {entry['name']} ({entry['type']})"
        assert [tuple(b.shape) for b in layer.blobs] == \
            [tuple(s) for s in entry["param_shapes"]], where
        if entry["bottoms"] == entry["tops"]:  # in place: the record has the final shape only
            assert layer.top_shapes(bottoms) == bottoms, where
        else:
            assert layer.top_shapes(bottoms) == [blobs[t] for t in entry["tops"]], where
        checked += 1
    assert checked, f"{net_json}: no layer of the common family checked"


def test_source_layers_follow_to_device() -> None:
    for text in ('type: "Input" name: "i" input_param { shape { dim: 2 } }',
                 'type: "DummyData" name: "d" dummy_data_param { shape { dim: 2 } }',
                 'type: "Parameter" name: "p" parameter_param { shape { dim: 2 } }'):
        layer = make(text).to("meta")
        assert [top.device.type for top in layer()] == ["meta"], text


def test_filter_two_bottoms_scatter_back() -> None:
    # filter_layer.cpp: selected items in order; unselected items get a zero diff.
    layer = make('type: "Filter" name: "f" bottom: "x" bottom: "y" bottom: "s" '
                 'top: "fx" top: "fy"', [(3, 2), (3,), (3, 1)])
    x = torch.arange(6, dtype=torch.float32).reshape(3, 2).requires_grad_()
    y = t([7.0, 8.0, 9.0]).requires_grad_()
    fx, fy = layer(x, y, t([[1.0], [0.0], [2.0]]))
    np.testing.assert_array_equal(fx.detach().numpy(), [[0, 1], [4, 5]])
    np.testing.assert_array_equal(fy.detach().numpy(), [7, 9])
    (fx.sum() + 2 * fy.sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 1], [0, 0], [1, 1]])
    np.testing.assert_array_equal(y.grad.numpy(), [2, 0, 2])


def test_reduction_asum_gradient_at_zero() -> None:
    # reduction_layer.cpp: ASUM's backward is sign(x) * diff * coeff, with sign(0) = 0.
    layer = make('type: "Reduction" name: "r" reduction_param { operation: ASUM axis: 1 }',
                 [(1, 3)])
    x = t([[-2.0, 0.0, 3.0]]).requires_grad_()
    (out,) = layer(x)
    out.backward(t([2.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [[-2, 0, 2]])


def test_argmax_default_shape_4d_top2() -> None:
    # argmax_layer.cpp Reshape: (N, 1, top_k, 1) for a 4-axis bottom without axis.
    layer = make('type: "ArgMax" name: "a" argmax_param { top_k: 2 }', [(2, 3, 1, 2)])
    assert layer.top_shapes([(2, 3, 1, 2)]) == [(2, 1, 2, 1)]
