"""Whole-file reads and binary protobuf files, with one-line errors naming the file.

Shared by the .caffemodel, .solverstate and .binaryproto readers (and the prototxt reader for
its raw bytes), so each format only states its own checks and messages.
"""
from __future__ import annotations

import os
from typing import TypeVar

from google.protobuf.message import Message

from ..errors import CaffelikeError, WeightsError, Where
from .atomic import atomic_write

M = TypeVar("M", bound=Message)

CORRUPT = "truncated or corrupt protobuf data"


def read_file_bytes(path: str, what: str,
                    error: type[CaffelikeError] = WeightsError) -> bytes:
    """The bytes of ``path``; ``error`` "cannot read <what> (reason)" if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise error(f"cannot read {what} ({exc.strerror})", Where(file=path)) from None


def parse_binary(message: M, raw: bytes, path: str, what: str, hint: str = CORRUPT) -> M:
    """Parse ``raw`` into ``message``; ``WeightsError`` "not a binary <what>: <hint>" if it fails."""
    try:
        message.ParseFromString(raw)
    except Exception:  # protobuf's DecodeError (its class differs between runtimes)
        raise WeightsError(f"not a binary {what}: {hint}", Where(file=path)) from None
    return message


def write_binary_proto(message: Message, path: str | os.PathLike) -> None:
    """Serialize ``message`` to ``path`` atomically (Caffe's WriteProtoToBinaryFile)."""
    data = message.SerializeToString()
    with atomic_write(path, "wb") as handle:
        handle.write(data)
