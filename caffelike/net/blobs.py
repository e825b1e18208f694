"""A net's pycaffe blobs: :class:`NetBlob` reads the solver's last pass lazily.

The solver trains through ``Net.run`` and never copies activations into the pycaffe blobs
(that would cost a copy of every blob every iteration). It hands the net its last pass's
tensors instead (:class:`LastPass`); a blob copies its value from there only when it is read,
so after ``solver.step()`` every ``net.blobs[name].data`` holds the last iteration's values,
as in pycaffe, at no cost per iteration. pycaffe's ``Net.forward`` does the same, except for
blobs already read once (:attr:`NetBlob.copies_eagerly`): a script may hold their numpy arrays,
which in pycaffe see every later forward, so those are copied at once.

A Split layer's tops share their bottom's data, as Caffe's SplitLayer does (``ShareData``):
their :class:`NetBlob` is an alias of the producer's (:meth:`NetBlob.share_data_with`), with
a diff of its own.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..blob import Blob


class LastPass:
    """The solver's last forward pass (blob name -> tensor), or None once released.

    A pass may hold only some blobs (the compiled forward's outputs, :mod:`.compiled`) with a
    ``complete`` callable computing all of them: the first read of a missing blob calls it.
    """

    def __init__(self) -> None:
        self.values: Mapping[str, torch.Tensor] | None = None
        self.version = 0
        self._complete: Callable[[], Mapping[str, torch.Tensor]] | None = None
        # the following blobs whose numpy data was handed out, by name (see NetBlob.copies_eagerly)
        self.exposed: dict[str, "NetBlob"] = {}
        # input blobs whose own tensor a pending ``complete`` reads: name -> (blob, its dict)
        self._aliases: dict[str, tuple["NetBlob", dict]] = {}

    def hold(self, values: Mapping[str, torch.Tensor] | None,
             complete: Callable[[], Mapping[str, torch.Tensor]] | None = None) -> None:
        """Make ``values`` the last pass (None releases it: the blobs keep what they read);
        ``complete`` computes every blob of the pass when one outside ``values`` is read."""
        self._drop_aliases()
        self.values = values
        self._complete = complete
        self.version += 1

    def alias(self, name: str, blob: "NetBlob", inputs: dict) -> None:
        """The pending ``complete`` reads input blob ``name``'s own tensor (``inputs[name]``)
        instead of a copy: it is copied into ``inputs`` before anything writes the blob."""
        self._aliases[name] = (blob, inputs)
        blob._aliased_by = self

    def unalias(self, name: str) -> None:
        """Input blob ``name`` is about to be written: a pending ``complete`` gets its copy."""
        entry = self._aliases.pop(name, None)
        if entry is not None:
            blob, inputs = entry
            blob._aliased_by = None
            if self._complete is not None:
                inputs[name] = inputs[name].clone()

    def _drop_aliases(self) -> None:
        for blob, _ in self._aliases.values():
            blob._aliased_by = None
        self._aliases.clear()

    def get(self, name: str) -> torch.Tensor | None:
        """Blob ``name`` of the last pass (completing the pass first if it lacks it), or None."""
        if self.values is None:
            return None
        value = self.values.get(name)
        if value is None and self._complete is not None:
            self.complete()
            value = self.values.get(name)
        return value

    def complete(self) -> None:
        """Compute every blob of a partial pass now (before it is replaced)."""
        if self._complete is not None and self.values is not None:
            complete, self._complete = self._complete, None
            full = dict(complete())
            full.update(self.values)  # the values already handed out stay as they were
            self.values = full
            self._drop_aliases()


_NEVER = LastPass()  # never holds a pass


class NetBlob(Blob):
    """A net activation's :class:`~caffelike.blob.Blob` that syncs from a :class:`LastPass` on read."""

    def __init__(self, shape: Sequence[int], name: str, last_pass: LastPass | None):
        super().__init__(shape)
        self._name = name
        self._last_pass = last_pass or _NEVER  # None: a net input, which only its user writes
        self._seen = self._last_pass.version
        self._owner: NetBlob | None = None
        self._exposed = False  # its numpy data was handed out (a script may hold the array)
        self._aliased_by: LastPass | None = None  # an input whose tensor a pending pass reads

    def share_data_with(self, owner: "NetBlob") -> None:
        """Use ``owner``'s data from now on (Caffe's Blob::ShareData); the diff stays this blob's."""
        while owner._owner is not None:
            owner = owner._owner
        self._owner = owner
        self._data = None

    @property
    def copies_eagerly(self) -> bool:
        """Whether a new pass must be copied in at once: the blob follows the passes and its
        numpy data was handed out (someone may hold that array, which must see the pass)."""
        return (self._exposed and self._data is not None and self._last_pass is not _NEVER
                and self._owner is None)

    @property
    def handed_out(self) -> bool:
        """Whether this blob's numpy data was handed out (a script may hold and write it)."""
        return (self._owner or self)._exposed

    def _before_write(self) -> None:
        # a pending pass reading this input's own tensor gets its copy first (LastPass.alias)
        if self._aliased_by is not None:
            self._aliased_by.unalias(self._name)

    def write(self, array: np.ndarray) -> None:
        """Copy ``array`` into the data (numpy's broadcasting and casting) without handing the
        array out: pycaffe's ``forward(**inputs)``."""
        self._before_write()
        self.data_tensor().numpy()[...] = array

    @property
    def data(self) -> np.ndarray:
        self._before_write()
        owner = self._owner or self
        if not owner._exposed:
            owner._exposed = True
            if owner._last_pass is not _NEVER:
                owner._last_pass.exposed[owner._name] = owner
        return self.data_tensor().numpy()

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self.data[...] = value

    def reshape(self, *shape: int) -> None:
        super().reshape(*shape)
        if self._data is None:  # a new array from now on: none handed out yet
            self._exposed = False
            self._last_pass.exposed.pop(self._name, None)

    def settle(self) -> None:
        """Copy in a pending last-pass value now (before that pass is replaced or released)."""
        if self._owner is None and self._last_pass.version != self._seen:
            self.data_tensor()

    @property
    def shares_data(self) -> bool:
        """Whether this blob's data is another blob's (a Split top)."""
        return self._owner is not None

    def data_tensor(self) -> torch.Tensor:
        if self._owner is not None:
            return self._owner.data_tensor()
        last = self._last_pass
        if last.version != self._seen:
            self._seen = last.version
            value = last.get(self._name)
            if value is not None:
                self.store("data", value)
        return super().data_tensor()

    def store(self, attr: str, value: torch.Tensor) -> None:
        if attr == "data":  # a value written now is newer than any pending one
            self._seen = self._last_pass.version
            self._before_write()
        super().store(attr, value)
