"""pycaffe's ``caffe.draw``: a NetParameter drawn as a Graphviz graph, as Caffe draws it.

Layers are boxes labelled with their name, ``(Type)`` (``(Pooling MAX)``), the kernel size,
stride and pad of spatial layers and, with ``display_lrm``, the lr multipliers of learning
layers; convolutions are red, pooling orange, inner products purple, other layers blue and
in-place layers green; blobs are grey octagons; edges out of Data, Convolution and
InnerProduct layers carry the batch size or ``num_output``. ``phase`` keeps only one phase's
layers; ``rankdir`` orients the graph ('LR', 'TB', 'BT', 'RL').

The pycaffe functions (``get_pydot_graph``, ``draw_net``, ``draw_net_to_file``) need the
``pydot`` package and Graphviz's ``dot`` program (``pip install "caffelike[draw]"`` and, e.g.,
``apt-get install graphviz``). :func:`draw`, used by ``caffelike draw_net``, writes ``.dot``
text without either, and other formats with ``dot`` alone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from .errors import CaffelikeError
from .glog import get_logger
from .proto import caffe_pb2

__all__ = ["LAYER_STYLE_DEFAULT", "NEURON_LAYER_STYLE", "BLOB_STYLE", "get_pooling_types_dict",
           "get_edge_label", "get_layer_lr_mult", "get_layer_label", "choose_color_by_layertype",
           "get_pydot_graph", "draw_net", "draw_net_to_file", "net_graph", "to_dot", "draw", "DrawError"]

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
LEARNING_TYPES = ("Convolution", "Deconvolution", "InnerProduct")
TYPE_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
               "InnerProduct": "#CC33FF"}
INSTALL_HINT = 'pip install "caffelike[draw]" (pydot) and install Graphviz (apt-get install graphviz)'


class DrawError(CaffelikeError, ImportError):
    """pydot or Graphviz's ``dot`` is missing, or ``dot`` failed."""


# -- Caffe's labels and colours ------------------------------------------------------------------
def get_pooling_types_dict() -> dict[int, str]:
    """PoolingParameter.PoolMethod number -> name (0 -> 'MAX')."""
    return {v.number: name for name, v in caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values_by_name.items()}


def get_edge_label(layer: caffe_pb2.LayerParameter) -> str:
    """Label of the edges out of ``layer``: 'Batch N' for Data, num_output for learning layers."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer: caffe_pb2.LayerParameter) -> tuple[float, float]:
    """(weight, bias) lr multipliers of a Convolution/Deconvolution/InnerProduct layer."""
    if layer.type not in LEARNING_TYPES:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    specs = layer.param
    if len(specs) > 2:
        raise ValueError("Could not parse the learning rate multiplier")
    mults = [spec.lr_mult for spec in specs] + [1.0] * (2 - len(specs))
    return mults[0], mults[1]


def get_layer_label(layer: caffe_pb2.LayerParameter, rankdir: str, display_lrm: bool = False) -> str:
    """The quoted node label of ``layer``: words on lines for 'LR'/'RL', on one line for 'TB'/'BT'."""
    sep = " " if rankdir in ("TB", "BT") else r"\n"
    if layer.type == "Pooling":
        parts = [layer.name, f"({layer.type} {get_pooling_types_dict()[layer.pooling_param.pool]})"]
    else:
        parts = [layer.name, f"({layer.type})"]
    if layer.type == "Pooling":
        p = layer.pooling_param
        kernel, stride, pad = p.kernel_size, p.stride, p.pad
    elif layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel = p.kernel_size[0] if len(p.kernel_size) else 1
        stride = p.stride[0] if len(p.stride) else 1
        pad = p.pad[0] if len(p.pad) else 0
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        parts.append(sep.join([f"kernel size: {kernel:d}", f"stride: {stride:d}", f"pad: {pad:d}"]))
    if display_lrm and layer.type in LEARNING_TYPES:
        weight_mult, bias_mult = get_layer_lr_mult(layer)
        if weight_mult or bias_mult:
            parts.append(f"lr mult: {weight_mult:.1f}, {bias_mult:.1f}")
    return '"' + sep.join(parts) + '"'


def choose_color_by_layertype(layertype: str) -> str:
    """Fill colour of a (not in-place) layer node."""
    return TYPE_COLORS.get(layertype, LAYER_STYLE_DEFAULT["fillcolor"])


def _in_phase(layer: caffe_pb2.LayerParameter, phase: int) -> bool:
    # Caffe's draw.py rule: only the rules' phases count (an unset phase reads as TRAIN).
    if layer.include and layer.exclude:
        raise ValueError(f"layer {layer.name} has both include and exclude specified.")
    included = not layer.include or any(rule.phase == phase for rule in layer.include)
    return included and not any(rule.phase == phase for rule in layer.exclude)


# -- the graph, independent of pydot -------------------------------------------------------------
@dataclass
class NetGraphDrawing:
    """Caffe's drawing of a net: node name -> attributes (insertion order kept), edges."""

    name: str
    rankdir: str
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (source, target, label)


def net_graph(caffe_net: caffe_pb2.NetParameter, rankdir: str, label_edges: bool = True,
              phase: int | None = None, display_lrm: bool = False) -> NetGraphDrawing:
    """The nodes and edges Caffe's ``get_pydot_graph`` makes (nodes are named by their label)."""
    drawing = NetGraphDrawing(caffe_net.name or "Net", rankdir)
    names: dict[str, str] = {}  # Caffe's node key -> node name
    edges: list[tuple[str, str, str]] = []

    def node(key: str, name: str, style: dict[str, str]) -> None:
        # As in Caffe, a blob seen again replaces its node: it keeps the style of its last use
        # (octagon as a bottom, Graphviz's default as a top).
        names[key] = name
        drawing.nodes[name] = dict(style)  # a dict keeps the first position, as Caffe's

    for layer in caffe_net.layer:
        if phase is not None and not _in_phase(layer, phase):
            continue
        layer_key = f"{layer.name}_{layer.type}"
        in_place = len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        style = NEURON_LAYER_STYLE if in_place else dict(LAYER_STYLE_DEFAULT,
                                                           fillcolor=choose_color_by_layertype(layer.type))
        node(layer_key, get_layer_label(layer, rankdir, display_lrm), style)
        for bottom in layer.bottom:
            node(bottom + "_blob", bottom, BLOB_STYLE)
            edges.append((bottom + "_blob", layer_key, '""'))
        for top in layer.top:
            node(top + "_blob", top, {})
            edges.append((layer_key, top + "_blob", get_edge_label(layer) if label_edges else '""'))
    drawing.edges = [(names[s], names[t], label) for s, t, label in edges]
    return drawing


def _dot_id(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text
    if text.isdigit() or (text.replace("_", "a").isalnum() and not text[0].isdigit()):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def _dot_attrs(attrs: dict[str, str]) -> str:
    return ", ".join(f"{k}={_dot_id(v)}" for k, v in attrs.items())


def to_dot(drawing: NetGraphDrawing) -> str:
    """The drawing as DOT text (what pydot writes for it)."""
    lines = [f"digraph {_dot_id(drawing.name)} {{", f"rankdir={drawing.rankdir};"]
    for name, attrs in drawing.nodes.items():
        lines.append(f"{_dot_id(name)} [{_dot_attrs(attrs)}];" if attrs else f"{_dot_id(name)};")
    for source, target, label in drawing.edges:
        lines.append(f"{_dot_id(source)} -> {_dot_id(target)} [label={_dot_id(label)}];")
    return "\n".join(lines + ["}"]) + "\n"


# -- pycaffe's API (pydot) -----------------------------------------------------------------------
def _pydot() -> Any:
    try:
        import pydotplus as pydot  # Caffe's draw.py prefers it, too
    except ImportError:
        try:
            import pydot
        except ImportError:
            raise DrawError(f"caffelike.draw needs the pydot package and Graphviz's dot program: "
                            f"{INSTALL_HINT}") from None
    return pydot


def get_pydot_graph(caffe_net: caffe_pb2.NetParameter, rankdir: str, label_edges: bool = True,
                    phase: int | None = None, display_lrm: bool = False) -> Any:
    """A ``pydot.Dot`` graph of ``caffe_net`` (see the module docstring)."""
    pydot = _pydot()
    drawing = net_graph(caffe_net, rankdir, label_edges, phase, display_lrm)
    graph = pydot.Dot(drawing.name, graph_type="digraph", rankdir=rankdir)
    nodes = {name: pydot.Node(name, **attrs) for name, attrs in drawing.nodes.items()}
    for n in nodes.values():
        graph.add_node(n)
    for source, target, label in drawing.edges:
        graph.add_edge(pydot.Edge(nodes[source], nodes[target], label=label))
    return graph


def _require_dot() -> None:
    if shutil.which("dot") is None:
        raise DrawError(f"drawing a net needs Graphviz's 'dot' program, which is not on the PATH "
                        f"(and the pydot package): {INSTALL_HINT}")


def draw_net(caffe_net: caffe_pb2.NetParameter, rankdir: str, ext: str = "png", phase: int | None = None,
             display_lrm: bool = False) -> bytes:
    """The drawing rendered by Graphviz in format ``ext`` ('png', 'svg', 'pdf', ...), as bytes."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    _require_dot()
    return graph.create(format=ext)


def draw_net_to_file(caffe_net: caffe_pb2.NetParameter, filename: str, rankdir: str = "LR",
                     phase: int | None = None, display_lrm: bool = False) -> None:
    """Write the drawing to ``filename`` in the format of its extension ('.raw': DOT text)."""
    ext = filename[filename.rfind(".") + 1:]
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as f:
        f.write(data)


# -- ``caffelike draw_net`` ----------------------------------------------------------------------
def draw(proto: str, out: str, rankdir: str = "LR", phase: str = "ALL", show_lr_mult: bool = False) -> str:
    """Write Caffe's drawing of the net file ``proto`` to ``out`` (format from its extension;
    ``.dot``/``.gv`` need no Graphviz, other formats its ``dot`` program)."""
    from .io import read_net

    net, _ = read_net(proto, allow_unknown_fields=True)
    phase_value = None if phase.upper() == "ALL" else caffe_pb2.Phase.Value(phase.upper())
    dot_text = to_dot(net_graph(net, rankdir, phase=phase_value, display_lrm=show_lr_mult))
    fmt = os.path.splitext(out)[1].lstrip(".").lower() or "png"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if fmt in ("dot", "gv", "raw"):
        with open(out, "w", encoding="utf-8") as f:
            f.write(dot_text)
        return out
    dot = shutil.which("dot")
    if dot is None:
        raise DrawError(f"drawing {out} needs Graphviz's 'dot' program, which is not installed "
                        "(apt-get install graphviz / brew install graphviz); or write a .dot file instead")
    result = subprocess.run([dot, f"-T{fmt}", "-o", out], input=dot_text.encode(), capture_output=True)
    if result.returncode != 0:
        raise DrawError(f"dot failed to write {out}: {result.stderr.decode(errors='replace').strip()}")
    get_logger("draw_net").info("Drawing net to %s", out)
    return out
