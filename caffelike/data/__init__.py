"""Training data: Caffe's DataTransformer (with the book's augmentations), sources, prefetch.

* ``transformer``: :class:`DataTransformer` (sample random choices, then apply them);
* ``images``: imread/imdecode/Datum conversions as Caffe's ``util/io.cpp``;
* ``sources``: image lists, LMDB/LevelDB, HDF5 file lists, with one-line errors;
* ``prefetch``: the read stream (order, shuffle, skip, shard) and worker-built batches;
* ``dbwrite``: writing LMDB/LevelDB for ``convert_imageset``.

The layers that use them live in :mod:`caffelike.layers.data`.
"""
from __future__ import annotations

from .transformer import DataTransformer, Draw

__all__ = ["DataTransformer", "Draw"]
