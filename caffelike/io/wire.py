"""The protobuf wire format, walked field by field without a schema.

For reading .caffemodels that a Caffe fork wrote: the fork's field numbers can name other
messages (or other wire types) in our schema, so a message is taken apart into its fields and
each is judged on its own (see :mod:`caffelike.io.salvage`). Encoding rules:
https://protobuf.dev/programming-guides/encoding/
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

VARINT, I64, LEN, SGROUP, EGROUP, I32 = range(6)


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, or a bad key)."""


@dataclass(frozen=True)
class WireField:
    """One field as stored: its number, wire type and where its bytes lie in the message.

    ``start:end`` spans key and value; ``value_start:end`` the value alone (for ``LEN`` fields
    the payload after the length).
    """

    number: int
    wire_type: int
    start: int
    value_start: int
    end: int


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _skip_value(data: bytes | memoryview, pos: int, number: int, wire_type: int) -> tuple[int, int]:
    """``(value_start, end)`` of the value whose key ended at ``pos``."""
    if wire_type == VARINT:
        return pos, read_varint(data, pos)[1]
    if wire_type == I64:
        end = pos + 8
    elif wire_type == I32:
        end = pos + 4
    elif wire_type == LEN:
        length, pos = read_varint(data, pos)
        end = pos + length
    elif wire_type == SGROUP:
        inner = pos
        while True:
            key, after = read_varint(data, inner)
            if key & 7 == EGROUP:
                if key >> 3 != number:
                    raise WireError("mismatched end of group")
                return pos, after
            inner = _skip_value(data, after, key >> 3, key & 7)[1]
    else:
        raise WireError(f"bad wire type {wire_type}")
    if end > len(data):
        raise WireError("field runs past the end of the message")
    return pos, end


def iter_fields(data: bytes | memoryview) -> Iterator[WireField]:
    """Every field of the message ``data``, in stored order; ``WireError`` if it is malformed."""
    pos = 0
    while pos < len(data):
        key, after = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value_start, end = _skip_value(data, after, number, wire_type)
        yield WireField(number, wire_type, pos, value_start, end)
        pos = end


def encode_varint(value: int) -> bytes:
    """``value`` (non-negative) as a varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: key, length, payload."""
    return encode_varint(number << 3 | LEN) + encode_varint(len(payload)) + payload
