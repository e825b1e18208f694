"""A .caffemodel whose param sections our schema cannot decode: keep the rest, drop those.

Caffe forks store their layer params under their own field numbers. Where such a number names
another message of our schema (SegNet's ``upsample_param`` 137 is our ``embed_param``, PSPNet's
``mat_write_param`` 145 our ``parameter_param``, ...), protobuf decodes the fork's bytes as our
message; that usually works (a field of another wire type is kept as unknown), but it fails the
whole file when the bytes are not a valid encoding of our message, e.g. a string where we
expect a packed repeated field or a sub-message. Then each layer is taken apart on the wire
and every field that does not decode on its own is left out (and listed), so the layer's name,
type and blobs still load. A blob that does not decode is an error: the weights are unusable.
"""
from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from ..errors import WeightsError, Where
from ..proto import caffe_pb2
from .wire import LEN, WireError, WireField, encode_len_field, iter_fields

# NetParameter field -> (its layer message, the layer's name field, its blobs field)
_LAYER_FIELDS: dict[int, tuple[type[Message], int, int]] = {
    100: (caffe_pb2.LayerParameter, 1, 7),
    2: (caffe_pb2.V1LayerParameter, 4, 6),
}


@dataclass(frozen=True)
class DroppedField:
    """A field left out: the layer holding it (None: the NetParameter itself), its number and
    the field our schema has under that number."""

    layer: str | None
    number: int
    ours: str | None

    def __str__(self) -> str:
        where = f"layer '{self.layer}'" if self.layer is not None else "the net"
        ours = f" (our {self.ours})" if self.ours else ""
        return f"{where}: field {self.number}{ours}"


def _decodes(message_class: type[Message], data: bytes | memoryview) -> bool:
    try:
        message_class.FromString(bytes(data))
    except Exception:  # protobuf's DecodeError (its class differs between runtimes)
        return False
    return True


def _ours(message_class: type[Message], number: int) -> str | None:
    field = message_class.DESCRIPTOR.fields_by_number.get(number)
    return field.name if field is not None else None


def _layer_name(fields: list[WireField], data: memoryview, name_number: int) -> str:
    for field in fields:
        if field.number == name_number and field.wire_type == LEN:
            return bytes(data[field.value_start:field.end]).decode("utf-8", "replace")
    return ""


def _salvage_layer(number: int, data: memoryview, path: str,
                   dropped: list[DroppedField]) -> bytes:
    """The layer's bytes without the fields that do not decode on their own."""
    message_class, name_number, blobs_number = _LAYER_FIELDS[number]
    fields = list(iter_fields(data))
    name = _layer_name(fields, data, name_number)
    kept = bytearray()
    blob_index = 0
    for field in fields:
        chunk = data[field.start:field.end]
        if _decodes(message_class, chunk):
            kept += chunk
        elif field.number == blobs_number:
            raise WeightsError(f"blob {blob_index} of this layer is not a valid BlobProto; its "
                               "weights cannot be read", Where(file=path, layer=name))
        else:
            dropped.append(DroppedField(name, field.number, _ours(message_class, field.number)))
        blob_index += field.number == blobs_number
    return bytes(kept)


def salvage_net(raw: bytes, path: str) -> tuple[caffe_pb2.NetParameter, list[DroppedField]]:
    """Parse ``raw`` leaving out each layer or net field that does not decode with our schema.

    Raises :class:`~caffelike.io.wire.WireError` if ``raw`` is not well-formed protobuf at all
    (or nothing is left out, so nothing explains why protobuf refused it), ``WeightsError`` if a
    blob does not decode.
    """
    data = memoryview(raw)
    out = bytearray()
    dropped: list[DroppedField] = []
    for field in iter_fields(data):
        chunk = data[field.start:field.end]
        if field.number in _LAYER_FIELDS and field.wire_type == LEN:
            payload = data[field.value_start:field.end]
            if _decodes(_LAYER_FIELDS[field.number][0], payload):
                out += chunk
            else:
                out += encode_len_field(field.number,
                                        _salvage_layer(field.number, payload, path, dropped))
        elif _decodes(caffe_pb2.NetParameter, chunk):
            out += chunk
        else:
            dropped.append(DroppedField(None, field.number,
                                        _ours(caffe_pb2.NetParameter, field.number)))
    if not dropped:
        raise WireError("every field decodes on its own")
    try:
        net = caffe_pb2.NetParameter.FromString(bytes(out))
    except Exception:  # protobuf's DecodeError: the fields do not decode together either
        raise WireError("the kept fields do not decode together") from None
    return net, dropped
