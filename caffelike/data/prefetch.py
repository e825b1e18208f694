"""Batches of a data layer, built in worker processes (torch.utils.data) ahead of the model.

Determinism: every random choice is a pure function of the layer's seed and a position in
its read stream (never of the worker that happens to build a batch), so batch ``b`` is the
same for 0, 1 or N workers. The read stream is Caffe's: the source order (reshuffled each
epoch when ``shuffle``), starting after ``rand_skip`` items, wrapping around at the end;
with ``set_shard(rank, world)`` a rank reads positions rank, rank + world, ...
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import CaffelikeError, DataError

# Tags that keep the seed streams of different uses apart.
_ORDER, _ITEM, _SKIP = 0, 1, 2


class ItemLoader(Protocol):
    """Reads and transforms items of a source (picklable).

    ``fetch(index)`` runs in the layer's own process (cheap: e.g. the bytes of a DB record, as
    database handles must not cross a fork); ``load(payload, rng)`` runs in a worker and turns
    the payload into one array per top.
    """

    def __len__(self) -> int: ...

    def fetch(self, index: int) -> Any: ...

    def load(self, payload: Any, rng: np.random.Generator) -> Sequence[np.ndarray]: ...


@dataclass
class ItemStream:
    """Which source item the layer reads at each position of its stream.

    ``blocks`` (HDF5Data: rows per file) keeps each block contiguous when shuffling: the block
    order and the rows inside each block are permuted, as Caffe's HDF5Data does.
    """

    size: int
    seed: int
    shuffle: bool = False
    skip: int = 0
    rank: int = 0
    world: int = 1
    blocks: Sequence[int] | None = None
    _orders: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def order(self, epoch: int) -> np.ndarray:
        """The source order of one pass (identity unless shuffling)."""
        cached = self._orders.get(epoch)
        if cached is not None:
            return cached
        if not self.shuffle:
            order = np.arange(self.size)
        else:
            rng = np.random.default_rng([self.seed, _ORDER, epoch])
            if self.blocks:
                starts = np.concatenate([[0], np.cumsum(self.blocks)[:-1]]).astype(np.int64)
                order = np.concatenate([starts[b] + rng.permutation(self.blocks[b])
                                        for b in rng.permutation(len(self.blocks))])
            else:
                order = rng.permutation(self.size)
        if len(self._orders) > 4:
            self._orders.clear()
        self._orders[epoch] = order
        return order

    def global_position(self, position: int) -> int:
        """Position in the unsharded stream of this rank's ``position``."""
        return position * self.world + self.rank

    def item(self, position: int) -> int:
        """Source index read at this rank's stream ``position``."""
        q = self.global_position(position) + self.skip
        return int(self.order(q // self.size)[q % self.size])


def draw_skip(seed: int, rand_skip: int) -> int:
    """Caffe's ``rand_skip``: skip a uniform number of items in ``[0, rand_skip)`` at start."""
    if rand_skip <= 0:
        return 0
    return int(np.random.default_rng([seed, _SKIP]).integers(rand_skip))


def item_rng(seed: int, global_position: int) -> np.random.Generator:
    """The generator for the item at ``global_position`` of a layer seeded with ``seed``."""
    return np.random.default_rng([seed, _ITEM, global_position])


@dataclass
class _Failure:
    """A user error raised in a worker, carried back to be re-raised in one line."""

    error: CaffelikeError


@dataclass(frozen=True)
class Ticket:
    """What a worker needs to build one batch: its number and each item's fetched payload."""

    batch: int
    items: tuple[tuple[int, int, Any], ...]  # (source index, global position, payload)


class BatchDataset(Dataset):
    """Map-style dataset keyed by :class:`Ticket` (picklable, for DataLoader workers)."""

    def __init__(self, loader: ItemLoader, stream: ItemStream, batch_size: int,
                 describe: Callable[[int], str] | None = None):
        self.loader = loader
        self.stream = stream
        self.batch_size = batch_size
        self.describe = describe

    def ticket(self, batch: int) -> Ticket:
        """Fetch the payloads of batch number ``batch`` (in the layer's process)."""
        items = []
        for i in range(self.batch_size):
            position = batch * self.batch_size + i
            index = self.stream.item(position)
            items.append((index, self.stream.global_position(position), self.loader.fetch(index)))
        return Ticket(batch, tuple(items))

    def tickets(self, start: int) -> Iterator[Ticket]:
        """Tickets of batches start, start + 1, ... (the DataLoader's sampler)."""
        for batch in itertools.count(start):
            yield self.ticket(batch)

    def build(self, ticket: Ticket) -> tuple[torch.Tensor, ...]:
        """One tensor per top for this batch (raises DataError on bad data)."""
        per_top: list[list[np.ndarray]] | None = None
        for index, position, payload in ticket.items:
            arrays = self.loader.load(payload, item_rng(self.stream.seed, position))
            if per_top is None:
                per_top = [[] for _ in arrays]
            elif arrays[0].shape != per_top[0][0].shape and getattr(self.loader, "fits_to_first", False):
                # the book fork's batches: cut to the first image's size (same draws again)
                arrays = self.loader.load(payload, item_rng(self.stream.seed, position),
                                          fit=per_top[0][0].shape[-2:])
            for top, array in zip(per_top, arrays):
                if top and top[0].shape != array.shape:
                    what = self.describe(index) if self.describe else f"item {index}"
                    raise DataError(f"{what}: gives a {_shape(array.shape)} blob but the batch "
                                    f"started with {_shape(top[0].shape)}; give every image the "
                                    "same size (new_height/new_width or crop_size)")
                top.append(array)
        assert per_top is not None
        return tuple(torch.from_numpy(np.stack(top)) for top in per_top)

    def __getitem__(self, ticket: Ticket) -> Any:
        try:
            return self.build(ticket)
        except CaffelikeError as exc:
            return _Failure(exc)

    def __len__(self) -> int:  # the stream is endless; DataLoader only needs the sampler
        return 2**62


class _Tickets:
    """The DataLoader's sampler: an endless iterable of tickets from a starting batch."""

    def __init__(self, dataset: BatchDataset, start: int):
        self.dataset, self.start = dataset, start

    def __iter__(self) -> Iterator[Ticket]:
        return self.dataset.tickets(self.start)


def _init_worker(worker_id: int) -> None:
    """Keep each worker to one OpenCV thread: the parallelism is across workers."""
    import cv2

    cv2.setNumThreads(1)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


class Prefetcher:
    """Yields batch after batch, built inline (0 workers) or ahead by worker processes."""

    def __init__(self, dataset: BatchDataset, num_workers: int = 0, prefetch: int = 4,
                 pin_memory: bool = False, start: int = 0):
        self.dataset = dataset
        self.num_workers = max(0, int(num_workers))
        self.prefetch = max(1, int(prefetch))
        self.pin_memory = pin_memory
        self.next_batch = start
        self._iter: Iterator[Any] | None = None

    def _loader_iter(self) -> Iterator[Any]:
        per_worker = max(1, -(-self.prefetch // self.num_workers))
        loader = DataLoader(self.dataset, batch_size=None,
                            sampler=_Tickets(self.dataset, self.next_batch),
                            num_workers=self.num_workers, pin_memory=self.pin_memory,
                            prefetch_factor=per_worker, persistent_workers=False,
                            worker_init_fn=_init_worker)
        return iter(loader)

    def next(self) -> tuple[torch.Tensor, ...]:
        """The next batch (tensors on the CPU, pinned when asked)."""
        if self.num_workers == 0:
            batch = self.dataset.build(self.dataset.ticket(self.next_batch))
            if self.pin_memory:
                batch = tuple(t.pin_memory() for t in batch)
        else:
            if self._iter is None:
                self._iter = self._loader_iter()
            batch = next(self._iter)
            if isinstance(batch, _Failure):
                self.close()
                raise batch.error
        self.next_batch += 1
        return batch

    def close(self) -> None:
        """Stop the workers (a later :meth:`next` restarts them at the next batch)."""
        it, self._iter = self._iter, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
