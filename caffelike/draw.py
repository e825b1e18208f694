"""A net drawn as a graph (``caffelike draw_net``).

Draws a net as Caffe's ``python/draw_net.py`` does: layers as boxes (name, type and the main
parameters), blobs as octagons, in-place layers folded onto their blob. The graph is written
in Graphviz's DOT language; any other output format is rendered by Graphviz's ``dot``
program, which must be installed (``apt install graphviz``); a ``.dot`` output needs nothing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Callable

from .errors import CaffelikeError
from .log import get_logger
from .proto import caffe_pb2

LAYER_STYLE = 'shape=record, style=filled, fillcolor="#6495ED"'
BLOB_STYLE = 'shape=octagon, style=filled, fillcolor="#E0E0E0"'
DATA_STYLE = 'shape=record, style=filled, fillcolor="#90EE90"'
LOSS_STYLE = 'shape=record, style=filled, fillcolor="#F4A460"'


def _conv_details(layer: caffe_pb2.LayerParameter) -> str:
    p = layer.convolution_param
    k = p.kernel_size[0] if p.kernel_size else p.kernel_h
    s = p.stride[0] if p.stride else (p.stride_h or 1)
    pad = p.pad[0] if p.pad else p.pad_h
    group = f", group {p.group}" if p.group > 1 else ""
    return f"{p.num_output} out, kernel {k}, stride {s}, pad {pad}{group}"


def _pool_details(layer: caffe_pb2.LayerParameter) -> str:
    p = layer.pooling_param
    kind = caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)
    if p.global_pooling:
        return f"{kind}, global"
    return f"{kind}, kernel {p.kernel_size or p.kernel_h}, stride {p.stride or p.stride_h}, pad {p.pad}"


DETAILS: dict[str, Callable[[caffe_pb2.LayerParameter], str]] = {
    "Convolution": _conv_details,
    "Deconvolution": _conv_details,
    "Pooling": _pool_details,
    "InnerProduct": lambda l: f"{l.inner_product_param.num_output} out",
    "LRN": lambda l: f"size {l.lrn_param.local_size}",
    "Dropout": lambda l: f"ratio {l.dropout_param.dropout_ratio:g}",
}


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("{", "\\{").replace("}", "\\}") \
        .replace("|", "\\|").replace("<", "\\<").replace(">", "\\>")


def _included(layer: caffe_pb2.LayerParameter, phase: int | None) -> bool:
    if phase is None:
        return True
    if layer.include:
        return any(not r.HasField("phase") or r.phase == phase for r in layer.include)
    return not any(r.HasField("phase") and r.phase == phase for r in layer.exclude)


def net_to_dot(net: caffe_pb2.NetParameter, rankdir: str = "LR", phase: int | None = None,
               show_lr_mult: bool = False) -> str:
    """DOT text of the net's graph (only the layers of ``phase`` when given)."""
    lines = [f'digraph "{_escape(net.name or "net")}" {{', f"  rankdir={rankdir};",
             '  node [fontname="Helvetica", fontsize=10];']
    blob_ids: dict[str, str] = {}

    def blob_node(name: str) -> str:
        if name not in blob_ids:
            blob_ids[name] = f"blob{len(blob_ids)}"
            lines.append(f'  {blob_ids[name]} [label="{_escape(name)}", {BLOB_STYLE}];')
        return blob_ids[name]

    for i, layer in enumerate(net.layer):
        if not _included(layer, phase):
            continue
        details = DETAILS.get(layer.type, lambda _l: "")(layer)
        if show_lr_mult and layer.param:
            details += (", " if details else "") + "lr_mult " + "/".join(f"{p.lr_mult:g}" for p in layer.param)
        label = "{" + "|".join(_escape(s) for s in (layer.name, layer.type, details) if s) + "}"
        style = DATA_STYLE if not layer.bottom else LOSS_STYLE if "Loss" in layer.type else LAYER_STYLE
        node = f"layer{i}"
        lines.append(f'  {node} [label="{label}", {style}];')
        for bottom in layer.bottom:
            lines.append(f"  {blob_node(bottom)} -> {node};")
        for top in layer.top:
            if top in layer.bottom:
                continue  # in-place: the blob keeps its node
            lines.append(f"  {node} -> {blob_node(top)};")
        for top in layer.top:
            if top in layer.bottom:
                # draw in-place layers as a loop so they stay visible
                lines.append(f"  {node} -> {blob_node(top)} [style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(proto: str, out: str, rankdir: str = "LR", phase: str = "ALL", show_lr_mult: bool = False) -> str:
    """Write the drawing of ``proto`` to ``out`` (format from its extension)."""
    from .io import read_net

    net, _ = read_net(proto, allow_unknown_fields=True)
    phase_value = None if phase.upper() == "ALL" else caffe_pb2.Phase.Value(phase.upper())
    dot_text = net_to_dot(net, rankdir, phase_value, show_lr_mult)
    fmt = os.path.splitext(out)[1].lstrip(".").lower() or "png"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if fmt in ("dot", "gv"):
        with open(out, "w", encoding="utf-8") as f:
            f.write(dot_text)
        return out
    dot = shutil.which("dot")
    if dot is None:
        raise CaffelikeError(f"drawing {out} needs Graphviz's 'dot' program, which is not installed "
                             "(apt install graphviz / brew install graphviz); or write a .dot file instead")
    result = subprocess.run([dot, f"-T{fmt}", "-o", out], input=dot_text.encode(), capture_output=True)
    if result.returncode != 0:
        raise CaffelikeError(f"dot failed to write {out}: {result.stderr.decode(errors='replace').strip()}")
    get_logger("draw_net").info("Drawing net to %s", out)
    return out

