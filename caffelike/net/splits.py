"""Caffe's automatically inserted Split layers (``src/caffe/util/insert_splits.cpp``).

A top read by more than one layer (a loss-weighted top counts as one extra reader) gets a
``Split`` layer right after its producer, named ``<blob>_<producer>_<top index>_split``, whose
tops ``<that name>_<j>`` replace the blob in each reader, in reading order. A loss weight moves
to the split's first top (the producer's loss weights are cleared, as Caffe does). A pure
function of the (filtered) NetParameter: the plan is made from its result.
"""
from __future__ import annotations

import re

from ..proto import caffe_pb2

SPLIT_TYPE = "Split"


def split_layer_name(layer: str, blob: str, top_index: int) -> str:
    """Caffe's SplitLayerName."""
    return f"{blob}_{layer}_{top_index}_split"


def split_blob_name(layer: str, blob: str, top_index: int, split_index: int) -> str:
    """Caffe's SplitBlobName."""
    return f"{split_layer_name(layer, blob, top_index)}_{split_index}"


def is_split_of(name: str, blob: str) -> bool:
    """Whether ``name`` is one of the Split tops Caffe makes for ``blob``."""
    return re.fullmatch(re.escape(blob) + r"_.+_\d+_split_\d+", name) is not None


def _count_readers(net: caffe_pb2.NetParameter
                   ) -> tuple[dict[tuple[int, int], tuple[int, int]], dict[tuple[int, int], int],
                              dict[tuple[int, int], float]]:
    """Per (layer, bottom): its source (layer, top); per source: readers; per source: loss weight."""
    last_top: dict[str, tuple[int, int]] = {}
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    readers: dict[tuple[int, int], int] = {}
    loss: dict[tuple[int, int], float] = {}
    for i, layer in enumerate(net.layer):
        for j, name in enumerate(layer.bottom):
            top = last_top.get(name)
            if top is None:  # plan_net reports unknown bottoms with their location
                continue
            source_of[(i, j)] = top
            readers[top] = readers.get(top, 0) + 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            top = last_top[layer.top[j]]
            loss[top] = layer.loss_weight[j]
            if loss[top]:
                readers[top] = readers.get(top, 0) + 1
    return source_of, readers, loss


def needs_splits(net: caffe_pb2.NetParameter) -> bool:
    """Whether :func:`insert_splits` would change ``net``."""
    return any(n > 1 for n in _count_readers(net)[1].values())


def insert_splits(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of ``net`` with Caffe's Split layers inserted (see the module docstring)."""
    source_of, readers, loss = _count_readers(net)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    next_split: dict[tuple[int, int], int] = {}
    for i, layer in enumerate(net.layer):
        copy = caffe_pb2.LayerParameter()
        copy.CopyFrom(layer)
        splits: list[caffe_pb2.LayerParameter] = []
        for j in range(len(copy.bottom)):
            top = source_of.get((i, j))
            if top is None or readers.get(top, 0) <= 1:
                continue
            k = next_split.get(top, 0)
            next_split[top] = k + 1
            copy.bottom[j] = split_blob_name(net.layer[top[0]].name, copy.bottom[j], top[1], k)
        for j, blob in enumerate(layer.top):
            count = readers.get((i, j), 0)
            if count <= 1:
                continue
            weight = loss.get((i, j), 0.0)
            split = caffe_pb2.LayerParameter(name=split_layer_name(layer.name, blob, j), type=SPLIT_TYPE)
            splits.append(split)
            split.bottom.append(blob)
            for k in range(count):
                split.top.append(split_blob_name(layer.name, blob, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                del copy.loss_weight[:]
                next_split[(i, j)] = next_split.get((i, j), 0) + 1
        out.layer.append(copy)
        out.layer.extend(splits)
    return out
