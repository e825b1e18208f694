"""User-facing errors: one line, compiler style, naming where the problem is.

Every mistake a user can make (a bad prototxt, a missing image, a weight shape mismatch)
raises a subclass of :class:`CaffelikeError`. The CLI prints ``str(error)`` on one line and
exits with status 1, without a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Where:
    """A location: file, line, column, and the Caffe layer (name and type) if known."""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    layer: str | None = None
    type: str | None = None

    def with_layer(self, layer: str | None, type: str | None = None) -> "Where":
        return replace(self, layer=layer, type=type)

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            loc = self.file
            if self.line is not None:
                loc += f":{self.line}"
                if self.column is not None:
                    loc += f":{self.column}"
            parts.append(loc)
        if self.layer is not None:
            parts.append(f"layer '{self.layer}' ({self.type})" if self.type else f"layer '{self.layer}'")
        return ": ".join(parts)


class CaffelikeError(Exception):
    """Base class of every error a user can cause; its text is the whole message."""

    def __init__(self, message: str, where: Where | None = None):
        self.message = message
        self.where = where
        prefix = str(where) if where is not None else ""
        super().__init__(f"{prefix}: {message}" if prefix else message)


class PrototxtError(CaffelikeError):
    """A text or binary protobuf file that does not parse (syntax, unknown field, wrong type)."""


class NetError(CaffelikeError):
    """A net that parses but cannot be wired: unknown type, unknown bottom, bad counts, ..."""


class LayerError(CaffelikeError):
    """A layer whose parameters or input shapes are invalid (Caffe's CHECK failures)."""


class WeightsError(CaffelikeError):
    """A .caffemodel or .solverstate that cannot be read or does not fit the net."""


class DataError(CaffelikeError):
    """Bad training data: missing image, bad list line, missing LMDB/HDF5, ..."""


class SolverError(CaffelikeError):
    """An invalid solver configuration or training state."""


class DeviceError(CaffelikeError):
    """A device that was asked for explicitly but cannot be used."""


class NumericalError(CaffelikeError):
    """Training produced NaN or Inf."""
