"""Data layers: ImageData, Data (LMDB/LevelDB), HDF5Data, MemoryData, WindowData, HDF5Output.

Each data layer produces its next batch on every ``forward()`` (tops ``data`` and ``label``,
float32; labels as floats, as Caffe's blobs). Reading and transforming happen in
:mod:`caffelike.data` (sources, transformer, prefetch); this module wires a LayerParameter
to them. Hooks used by the solver and pycaffe:

* ``set_seed(seed)``: the seed of every random choice (shuffle, rand_skip, crops, mirrors, ...);
  the default is ``torch.initial_seed()``, so ``caffelike.set_random_seed`` pins it;
* ``set_shard(rank, world_size)``: read stream positions rank, rank + world_size, ...
  (give every rank the same seed: the shuffled order must agree for the shares to partition
  the data; random crops/mirrors still differ per rank, being keyed by stream position);
* ``set_num_workers(n)``: prefetch worker processes (default: :func:`default_workers`);
  batches are identical for any worker count.

Relative paths (``source``, ``root_folder``, ``mean_file``) are relative to the current
directory, as in Caffe; ``root_folder`` is prepended to list paths as a plain string.
"""
from __future__ import annotations

import os
import zlib
from typing import Sequence

import numpy as np
import torch

from ..data.items import DatumItems, HDF5Items, ImageListItems, WindowItems
from ..data.prefetch import BatchDataset, ItemStream, Prefetcher, draw_skip
from ..data.sources import HDF5Files, KeyValueDB
from ..data.transformer import DataTransformer
from ..data.windows import read_window_file
from ..errors import DataError, Where
from ..io.image_list import read_image_list
from ..glog import get_logger
from ..proto import caffe_pb2
from .base import TEST, TRAIN, Layer, Shape, register_layer

log = get_logger("data")

_BACKENDS = {caffe_pb2.DataParameter.LMDB: "lmdb", caffe_pb2.DataParameter.LEVELDB: "leveldb"}


def default_workers(phase: int) -> int:
    """Prefetch workers unless told otherwise: ``$CAFFELIKE_DATA_WORKERS`` if set, else for
    TRAIN up to 4 (half the cores) on machines with >= 4 cores, and 0 (inline) otherwise."""
    value = os.environ.get("CAFFELIKE_DATA_WORKERS", "")
    if value.strip():
        try:
            return max(0, int(value))
        except ValueError:
            log.warning("ignoring CAFFELIKE_DATA_WORKERS=%r (not an integer)", value)
    cores = os.cpu_count() or 1
    return min(4, cores // 2) if phase == TRAIN and cores >= 4 else 0


class StreamingDataLayer(Layer):
    """Shared machinery of the layers that read a source through a prefetched item stream.

    ``param_field`` names the layer's own parameter message; its ``batch_size`` (and, where
    the message has them, ``shuffle`` and ``rand_skip``) drive the stream.
    """

    param_field = ""
    items: object
    batches: type[BatchDataset] = BatchDataset  # builds a batch's tops from its items

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)
        self.num_workers = default_workers(phase)
        self.prefetch = 4
        self.rank, self.world_size = 0, 1
        self.seed = int(torch.initial_seed())
        self._prefetcher: Prefetcher | None = None
        self._start = 0
        self._shapes: list[Shape] = []
        if self._own_param().batch_size <= 0:
            raise self.error(f"{self.param_field}.batch_size must be positive")

    # -- hooks for the solver / pycaffe -------------------------------------------------------
    def set_seed(self, seed: int) -> None:
        """Seed every random choice of this layer; restarts the stream at its beginning."""
        self.seed = int(seed)
        self._restart()

    def set_shard(self, rank: int, world_size: int) -> None:
        """Read this rank's share: stream positions rank, rank + world_size, ..."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise self.error(f"shard rank {rank} is not in [0, {world_size})")
        self.rank, self.world_size = int(rank), int(world_size)
        self._restart()

    def set_num_workers(self, num_workers: int) -> None:
        """Number of prefetch worker processes (0: build batches in this process)."""
        self.num_workers = max(0, int(num_workers))
        self._restart(keep_position=True)

    # -- subclass interface ---------------------------------------------------------------------
    def _own_param(self):
        return getattr(self.param, self.param_field)

    def _items(self):
        return self.items

    def _batch_size(self) -> int:
        return int(self._own_param().batch_size)

    def _shuffle(self) -> bool:
        return bool(getattr(self._own_param(), "shuffle", False))

    def _rand_skip(self) -> int:
        return int(getattr(self._own_param(), "rand_skip", 0))

    def _blocks(self) -> list[int] | None:
        return None

    # -- running --------------------------------------------------------------------------------
    def stream_seed(self) -> int:
        """The seed of this layer's stream: the user seed mixed with the layer name."""
        mixed = np.random.SeedSequence([self.seed % 2**63, zlib.crc32(self.param.name.encode())])
        return int(mixed.generate_state(1, dtype=np.uint64)[0] >> 1)

    def make_dataset(self) -> BatchDataset:
        """The batch builder for the current seed and shard."""
        items = self._items()
        seed = self.stream_seed()
        skip = draw_skip(seed, self._rand_skip())
        if skip >= len(items):
            raise self.error(f"rand_skip drew {skip} but the source has only {len(items)} "
                             "items; not enough points to skip")
        if skip:
            log.info("Skipping first %d data points.", skip)
        stream = ItemStream(len(items), seed, self._shuffle(), skip, self.rank, self.world_size,
                            self._blocks())
        return self.batches(items, stream, self._batch_size(), getattr(items, "describe", None))

    def _restart(self, keep_position: bool = False) -> None:
        old = self._prefetcher
        start = old.next_batch if (old is not None and keep_position) else 0
        if old is not None:
            old.close()
        self._prefetcher = None
        self._start = start

    def _get_prefetcher(self) -> Prefetcher:
        if self._prefetcher is None:
            pin = self._device_probe.device.type == "cuda"
            self._prefetcher = Prefetcher(self.make_dataset(), self.num_workers, self.prefetch,
                                          pin, self._start)
        return self._prefetcher

    def forward(self, *bottoms: torch.Tensor) -> list[torch.Tensor]:
        batch = self._get_prefetcher().next()
        device = self._device_probe.device
        if device.type != "cpu":
            batch = tuple(t.to(device, non_blocking=True) for t in batch)
        return list(batch[:len(self.param.top)])

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return list(self._shapes)

    def close(self) -> None:
        """Stop prefetch workers."""
        self._restart(keep_position=True)

    def __del__(self) -> None:
        try:
            if self._prefetcher is not None:
                self._prefetcher.close()
        except Exception:  # at interpreter exit (or after a failed __init__) there is nothing to stop
            pass

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_prefetcher"] = None
        return state


@register_layer("ImageData", bottoms=0, tops=2, is_data=True)
class ImageData(StreamingDataLayer):
    """Reads ``path label`` image lists (cv2, BGR), transformed by ``transform_param``.

    Caffe semantics: the list is split at the last space; ``root_folder`` is a string prefix;
    ``shuffle`` reshuffles every epoch; ``rand_skip`` skips ``[0, rand_skip)`` items once;
    a batch wraps across the end of the list. Golden: tests/golden/solvers/imagedata_png.

    The book fork's (Caffe_Long) ``label_size`` > 1: list lines ``path l1 ... lK`` split on
    whitespace, label top ``(N, label_size, 1, 1)``; label_size 1 keeps BVLC's list and its
    ``(N,)`` top (the fork's is ``(N, 1, 1, 1)``, same values). Its transformer fields: see
    :mod:`caffelike.data.transformer`. Goldens: tests/golden/caffe_long/data/ImageData__*.
    """

    param_field = "image_data_param"

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.image_data_param
        # Caffe builds the transformer (reading mean_file) before it reads the list
        transformer = DataTransformer(param.transform_param, phase, self.where)
        if (p.new_height == 0) != (p.new_width == 0):
            raise self.error("new_height and new_width must be set together")
        label_size = int(p.label_size)
        if label_size < 1:
            raise self.error(f"image_data_param.label_size must be >= 1, got {label_size}")
        log.info("Opening file %s", p.source)
        entries = read_image_list(p.source, self.where, labels=label_size if label_size > 1 else None)
        log.info("A total of %d images.", len(entries))
        self.items = ImageListItems(entries, p.source, p.root_folder, p.new_height,
                                    p.new_width, p.is_color, transformer, self.where, label_size)
        shape = self.items.output_shape(0)
        label_shape = (p.batch_size, label_size, 1, 1) if label_size > 1 else (p.batch_size,)
        self._shapes = [(p.batch_size, *shape), label_shape]
        log.info("output data size: %d,%d,%d,%d", *self._shapes[0])


@register_layer("Data", bottoms=0, tops=(1, 2), is_data=True)
class Data(StreamingDataLayer):
    """Reads Datum records (raw or encoded) from an LMDB (or LevelDB with ``plyvel``).

    Caffe semantics: records in key order, wrapping at the end; encoded images decode with
    their own channels unless ``force_color``/``force_gray``. Golden: tests/golden/data.

    The book fork's (Caffe_Long) multi-label records (``Datum.label`` repeated, K labels read
    from the first record): label top ``(N, K)``, row ``i`` the labels of item ``i``. The fork
    shapes that top ``(N,) * K`` (a K-axis blob: (3, 3) for 2 labels, batch 3) and writes only
    its first N*K values, in the same order; caffelike keeps the values, not that shape. One
    label per record (every BVLC LMDB) keeps BVLC's ``(N,)``. Golden:
    tests/golden/caffe_long/data/Data__lmdb_2labels_crop48.
    """

    param_field = "data_param"

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.data_param
        self.prefetch = int(p.prefetch) if p.prefetch else 4
        backend = _BACKENDS.get(p.backend, "lmdb")
        if backend == "leveldb" and os.path.isfile(os.path.join(p.source, "data.mdb")):
            # caffe.proto's default backend is LEVELDB; a folder holding data.mdb is an LMDB.
            log.warning("%s: backend %s but '%s' is an LMDB; reading it as LMDB", self.where,
                        "LEVELDB" if p.HasField("backend") else "LEVELDB (the default)", p.source)
            backend = "lmdb"
        db = KeyValueDB(p.source, backend, self.where)
        log.info("Opened %s %s", backend, p.source)
        transformer = DataTransformer(param.transform_param, phase, self.where)
        if p.force_encoded_color:  # declared in caffe.proto, unused by Caffe itself: honoured
            if transformer.force_gray:
                raise self.error("cannot set both force_encoded_color and force_gray")
            transformer.force_color = True
        first = db.get(0)
        labels = len(param.top) > 1
        count = len(DatumItems(db, transformer, labels, self.where).labels(first)) if labels else 1
        self.items = DatumItems(db, transformer, labels, self.where, max(1, count))
        shape = self.items.output_shape(first)
        label_shape = [(p.batch_size, count) if count > 1 else (p.batch_size,)] if labels else []
        self._shapes = [(p.batch_size, *shape)] + label_shape
        log.info("output data size: %d,%d,%d,%d", *self._shapes[0])


@register_layer("HDF5Data", bottoms=0, tops=(1, None), is_data=True)
class HDF5Data(StreamingDataLayer):
    """Reads rows of the datasets named by its tops from the .h5 files listed in ``source``.

    Caffe semantics: no transform; ``shuffle`` permutes the file order and the rows inside
    each file, every pass.
    """

    param_field = "hdf5_data_param"

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.hdf5_data_param
        log.info("Loading list of HDF5 filenames from: %s", p.source)
        self.files = HDF5Files(p.source, list(param.top), self.where)
        log.info("Number of HDF5 files: %d", len(self.files.files))
        self._shapes = [(p.batch_size, *s) for s in self.files.row_shapes]

    def _items(self):
        return HDF5Items(self.files)

    def _blocks(self) -> list[int] | None:
        return list(self.files.rows)


@register_layer("WindowData", bottoms=0, tops=2, is_data=True)
class WindowData(StreamingDataLayer):
    """R-CNN window sampling: each batch holds ``batch_size - num_fg`` background windows,
    then ``num_fg = batch_size * fg_fraction`` foreground ones, warped to ``crop_size``.

    Caffe semantics (window_data_layer.cpp): windows drawn uniformly with replacement;
    ``context_pad`` and ``crop_mode: "square"`` enlarge the box; parts outside the image stay
    0; ``window_data_param.scale`` multiplies after the mean (transform_param's crop_size,
    mirror, mean_file/mean_value apply).
    """

    param_field = "window_data_param"

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p, t = param.window_data_param, param.transform_param
        transformer = DataTransformer(t, phase, self.where)  # before the window file, as in Caffe
        if t.crop_size <= 0:
            raise self.error("WindowData needs transform_param.crop_size > 0")
        if p.crop_mode not in ("warp", "square"):
            raise self.error(f"crop_mode '{p.crop_mode}' is not 'warp' or 'square'")
        if 2 * p.context_pad >= t.crop_size:
            raise self.error(f"context_pad {p.context_pad} leaves nothing of crop_size {t.crop_size}")
        windows = read_window_file(p.source, p.root_folder, p.fg_threshold, p.bg_threshold,
                                   self.where)
        channels = windows.channels[0]
        self.items = WindowItems(windows, int(p.batch_size), p.fg_fraction, int(t.crop_size),
                                  int(p.context_pad), p.crop_mode == "square", bool(t.mirror),
                                  float(p.scale), transformer, self.where)
        self._shapes = [(p.batch_size, channels, t.crop_size, t.crop_size), (p.batch_size,)]
        log.info("output data size: %d,%d,%d,%d", *self._shapes[0])

    def make_dataset(self) -> BatchDataset:
        # Sampling is random with replacement: a shard is simply a differently seeded stream.
        seed = int(np.random.SeedSequence([self.stream_seed(), self.rank]).generate_state(1)[0])
        stream = ItemStream(self._batch_size(), seed)
        return BatchDataset(self.items, stream, self._batch_size())


@register_layer("MemoryData", bottoms=0, tops=2, is_data=True)
class MemoryData(Layer):
    """Serves batches of arrays given from Python with :meth:`set_input_arrays` (pycaffe).

    Caffe semantics: no transform on these arrays; the array count must be a multiple of
    ``batch_size``; batches wrap around.
    """

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.memory_data_param
        self.batch_size, self.channels = int(p.batch_size), int(p.channels)
        self.height, self.width = int(p.height), int(p.width)
        if min(self.batch_size, self.channels, self.height, self.width) <= 0:
            raise self.error("memory_data_param needs positive batch_size, channels, height "
                             "and width")
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)
        self.rank, self.world_size, self.seed = 0, 1, 0
        self._data: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._batch = 0

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """Serve these arrays: data ``(N, C, H, W)``, labels ``(N,)`` (or ``(N, 1, 1, 1)``)."""
        data = np.asarray(data)
        labels = np.asarray(labels)
        want = (self.channels, self.height, self.width)
        if data.ndim != 4 or tuple(data.shape[1:]) != want:
            raise self.error(f"data array has shape {data.shape}; expected (N, {want[0]}, "
                             f"{want[1]}, {want[2]})")
        labels = labels.reshape(labels.shape[0], -1) if labels.ndim else labels.reshape(1, 1)
        if labels.shape != (data.shape[0], 1):
            raise self.error(f"labels array has shape {labels.shape}; expected ({data.shape[0]},) "
                             "with one label per image")
        if data.shape[0] == 0 or data.shape[0] % self.batch_size:
            raise self.error(f"{data.shape[0]} images is not a positive multiple of batch_size "
                             f"{self.batch_size}")
        self._data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        self._labels = torch.from_numpy(np.ascontiguousarray(labels[:, 0], dtype=np.float32))
        self._batch = 0

    def set_seed(self, seed: int) -> None:
        """MemoryData draws nothing at random; kept for the solver's uniform interface."""
        self.seed = int(seed)

    def set_shard(self, rank: int, world_size: int) -> None:
        """Serve this rank's share of the arrays: items rank, rank + world_size, ..."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise self.error(f"shard rank {rank} is not in [0, {world_size})")
        self.rank, self.world_size = int(rank), int(world_size)
        self._batch = 0

    def forward(self, *bottoms: torch.Tensor) -> list[torch.Tensor]:
        if self._data is None or self._labels is None:
            raise self.error("no arrays to serve; call net.set_input_arrays(data, labels) first")
        n = self._data.shape[0]
        start = self._batch * self.batch_size
        positions = torch.arange(start, start + self.batch_size) * self.world_size + self.rank
        index = positions % n
        self._batch += 1
        if self.world_size == 1 and int(index[0]) + self.batch_size <= n:
            first = int(index[0])
            data = self._data[first:first + self.batch_size]
            labels = self._labels[first:first + self.batch_size]
        else:
            data, labels = self._data[index], self._labels[index]
        device = self._device_probe.device
        return [data.to(device), labels.to(device)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [(self.batch_size, self.channels, self.height, self.width), (self.batch_size,)]


@register_layer("HDF5Output", bottoms=2, tops=0)
class HDF5Output(Layer):
    """Writes its two bottoms to ``hdf5_output_param.file_name`` as datasets ``data``/``label``.

    The file is created (truncated) when the layer is built, as in Caffe; each forward
    appends its batch (Caffe can write only one batch per file).
    """

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        import h5py

        self.file_name = param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name is required")
        try:
            with h5py.File(self.file_name, "w"):
                pass
        except OSError as exc:
            raise DataError(f"cannot create HDF5 file '{self.file_name}': {exc}", self.where) from None

    def forward(self, *bottoms: torch.Tensor) -> list[torch.Tensor]:
        import h5py

        if any(b.device.type == "meta" for b in bottoms):
            return []
        with h5py.File(self.file_name, "a") as h5:
            for name, blob in zip(("data", "label"), bottoms):
                array = blob.detach().float().cpu().numpy()
                if name not in h5:
                    h5.create_dataset(name, data=array, maxshape=(None, *array.shape[1:]),
                                      chunks=True)
                else:
                    ds = h5[name]
                    if tuple(ds.shape[1:]) != tuple(array.shape[1:]):
                        raise self.error(f"bottom '{name}' changed shape from {ds.shape[1:]} to "
                                         f"{array.shape[1:]}")
                    ds.resize(ds.shape[0] + array.shape[0], axis=0)
                    ds[-array.shape[0]:] = array
        return []

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return []
