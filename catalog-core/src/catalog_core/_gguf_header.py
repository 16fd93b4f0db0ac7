"""The GGUF header, parsed from raw bytes: where each metadata value lies, and the tensor table.

`parse_header(buffer)` walks the header (magic `GGUF`, version 2 or 3, tensor and metadata
counts, the key/value pairs, the tensor infos) with `struct` and decodes nothing it does not
have to: a metadata value is recorded as its type, element count and offset, and decoded only
when `GgufHeader.value(key)` asks for it, so a 262,144-entry token array costs one pass over
its string lengths and no Python objects. Tensor byte sizes come from `gguf`'s own tables
(`GGML_QUANT_SIZES`). The buffer is usually a read-only mmap that the caller keeps open while
it reads values; this module does no I/O of its own.

Every count is checked against the bytes left before it is used, so a truncated or corrupt
header raises `GgufFormatError` (a `ValueError`) promptly and never reads past the end. The
checks follow gguf-py's `GGUFReader`, which llorch used before; like llama.cpp (and unlike
gguf-py) this reader refuses arrays of arrays and unknown array element types.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass

import gguf

__all__ = ["FieldValue", "GgufFormatError", "GgufHeader", "Scalar", "TensorInfo", "parse_header"]

Scalar = int | float | bool | str
FieldValue = Scalar | list[Scalar]
Buffer = bytes | mmap.mmap

_STRING = int(gguf.GGUFValueType.STRING)
_ARRAY = int(gguf.GGUFValueType.ARRAY)
_UINT32 = int(gguf.GGUFValueType.UINT32)
# struct codes of the fixed-size value types; sizes are struct's standard ones ('<' or '>').
_CODES: dict[int, str] = {
    int(gguf.GGUFValueType.UINT8): "B",
    int(gguf.GGUFValueType.INT8): "b",
    int(gguf.GGUFValueType.UINT16): "H",
    int(gguf.GGUFValueType.INT16): "h",
    int(gguf.GGUFValueType.UINT32): "I",
    int(gguf.GGUFValueType.INT32): "i",
    int(gguf.GGUFValueType.FLOAT32): "f",
    int(gguf.GGUFValueType.BOOL): "?",
    int(gguf.GGUFValueType.UINT64): "Q",
    int(gguf.GGUFValueType.INT64): "q",
    int(gguf.GGUFValueType.FLOAT64): "d",
}
_SIZES: dict[int, int] = {kind: struct.calcsize("<" + code) for kind, code in _CODES.items()}
_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
# Smallest encodings, used to bound a count by the bytes left: a string is its uint64
# length; a key/value pair is a key, a uint32 type and a 1-byte value; a tensor info is a
# name, a uint32 dimension count, a uint32 type and a uint64 offset.
_STRING_MIN = 8
_KV_MIN = _STRING_MIN + 4 + 1
_TENSOR_INFO_MIN = _STRING_MIN + 4 + 4 + 8
# gguf-py files the header's own fields under these keys and refuses a pair that repeats one.
_RESERVED_KEYS = frozenset({"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"})


class GgufFormatError(ValueError):
    """The bytes are not a GGUF header this reader can read; the message says where."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor of the table: its ggml type, element count and size in bytes."""

    name: str
    ggml_type: int
    n_elements: int
    n_bytes: int


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where one metadata value lies: `count` elements of `element_type` at `offset`."""

    is_array: bool
    element_type: int
    count: int
    offset: int


@dataclass(frozen=True, slots=True)
class _RawTensor:
    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int


@dataclass(frozen=True, slots=True)
class GgufHeader:
    """A parsed header. `value` decodes from `buffer`, which must stay open until then."""

    buffer: Buffer
    byte_order: str
    slots: dict[str, _Slot]
    tensors: tuple[TensorInfo, ...]

    def value(self, key: str) -> FieldValue | None:
        """The value under `key` (a list for an array); None when the key is absent."""
        slot = self.slots.get(key)
        if slot is None:
            return None
        values = _decode_elements(self.buffer, self.byte_order, slot)
        return values if slot.is_array else values[0]

    def length(self, key: str) -> int | None:
        """Elements of the array under `key` (1 for a scalar), without decoding them."""
        slot = self.slots.get(key)
        return None if slot is None else slot.count


class _Cursor:
    """Reads values from `buffer` in `order` ('<' or '>'), refusing to pass its end."""

    __slots__ = ("buffer", "end", "offset", "order")

    def __init__(self, buffer: Buffer, order: str, offset: int) -> None:
        self.buffer = buffer
        self.end = len(buffer)
        self.order = order
        self.offset = offset

    def advance(self, size: int, what: str) -> int:
        """Skip `size` bytes; returns where they start."""
        start = self.offset
        if size > self.end - start:
            raise GgufFormatError(f"truncated {what} at byte {start}")
        self.offset = start + size
        return start

    def check_count(self, count: int, min_size: int, what: str) -> None:
        left = self.end - self.offset
        if count * min_size > left:
            raise GgufFormatError(f"{what} {count} at byte {self.offset} exceeds the file")

    def uint32(self, what: str) -> int:
        return self._unsigned("I", 4, what)

    def uint64(self, what: str) -> int:
        return self._unsigned("Q", 8, what)

    def _unsigned(self, code: str, size: int, what: str) -> int:
        start = self.advance(size, what)
        return int(struct.unpack_from(self.order + code, self.buffer, start)[0])

    def text(self, what: str) -> str:
        length = self.uint64(what)
        start = self.advance(length, what)
        try:
            return self.buffer[start : start + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GgufFormatError(f"{what} at byte {start} is not UTF-8") from exc


def parse_header(buffer: Buffer) -> GgufHeader:
    """Parse a GGUF file's header from its bytes; GgufFormatError if it is not one."""
    cursor = _Cursor(buffer, _byte_order(buffer), offset=8)
    tensor_count = cursor.uint64("tensor count")
    kv_count = cursor.uint64("metadata count")
    cursor.check_count(kv_count, _KV_MIN, "metadata count")
    slots = _read_metadata(cursor, kv_count)
    cursor.check_count(tensor_count, _TENSOR_INFO_MIN, "tensor count")
    raw_tensors = [_read_tensor_info(cursor) for _ in range(tensor_count)]
    alignment = _alignment(buffer, cursor.order, slots)
    data_start = cursor.offset + (-cursor.offset % alignment)
    tensors = _size_tensors(raw_tensors, data_start, len(buffer))
    return GgufHeader(buffer, cursor.order, slots, tensors)


def _byte_order(buffer: Buffer) -> str:
    """'<' or '>' after checking magic and version (gguf-py's rule: a version whose low
    16 bits are zero was written in the other byte order)."""
    if buffer[:4] != _MAGIC:
        raise GgufFormatError("GGUF magic invalid")
    if len(buffer) < 8:
        raise GgufFormatError("truncated GGUF version")
    order = "<"
    version = int(struct.unpack_from("<I", buffer, 4)[0])
    if version & 0xFFFF == 0:
        order = ">"
        version = int(struct.unpack_from(">I", buffer, 4)[0])
    if version not in _VERSIONS:
        raise GgufFormatError(f"GGUF version {version} is not supported (only 2 and 3)")
    return order


def _read_metadata(cursor: _Cursor, count: int) -> dict[str, _Slot]:
    slots: dict[str, _Slot] = {}
    for _ in range(count):
        key = cursor.text("metadata key")
        if key in slots or key in _RESERVED_KEYS:
            raise GgufFormatError(f"duplicate metadata key {key!r}")
        slots[key] = _read_slot(cursor, key)
    return slots


def _read_slot(cursor: _Cursor, key: str) -> _Slot:
    value_type = cursor.uint32(f"type of {key}")
    if value_type != _ARRAY:
        return _Slot(False, value_type, 1, _skip_values(cursor, value_type, 1, key))
    element_type = cursor.uint32(f"element type of {key}")
    count = cursor.uint64(f"length of {key}")
    return _Slot(True, element_type, count, _skip_values(cursor, element_type, count, key))


def _skip_values(cursor: _Cursor, value_type: int, count: int, key: str) -> int:
    """Move past `count` values of `value_type` without decoding them; returns their start."""
    start = cursor.offset
    if value_type == _STRING:
        _skip_strings(cursor, count, key)
    elif value_type in _SIZES:
        cursor.advance(count * _SIZES[value_type], f"value of {key}")
    elif value_type == _ARRAY:
        raise GgufFormatError(f"{key} is an array of arrays, which GGUF readers do not support")
    else:
        raise GgufFormatError(f"{key} has unknown value type {value_type}")
    return start


def _skip_strings(cursor: _Cursor, count: int, key: str) -> None:
    """Hop over `count` strings by their lengths alone: the tight loop of the whole parse."""
    cursor.check_count(count, _STRING_MIN, f"length of {key}")
    length_at = struct.Struct(cursor.order + "Q").unpack_from
    buffer, offset = cursor.buffer, cursor.offset
    try:
        for _ in range(count):
            offset += 8 + length_at(buffer, offset)[0]
    except (struct.error, OverflowError) as exc:  # a length ran past the end
        raise GgufFormatError(f"truncated strings of {key}") from exc
    cursor.advance(offset - cursor.offset, f"strings of {key}")


def _decode_elements(buffer: Buffer, order: str, slot: _Slot) -> list[Scalar]:
    """Decode the values of one slot; the parse has checked that they lie in the buffer."""
    if slot.element_type != _STRING:
        code = f"{order}{slot.count}{_CODES[slot.element_type]}"
        return list(struct.unpack_from(code, buffer, slot.offset))
    cursor = _Cursor(buffer, order, slot.offset)
    return [cursor.text("string value") for _ in range(slot.count)]


def _read_tensor_info(cursor: _Cursor) -> _RawTensor:
    name = cursor.text("tensor name")
    n_dims = cursor.uint32(f"dimension count of {name}")
    cursor.check_count(n_dims, 8, f"dimension count of {name}")
    start = cursor.advance(8 * n_dims, f"dimensions of {name}")
    dims = struct.unpack_from(f"{cursor.order}{n_dims}Q", cursor.buffer, start)
    ggml_type = cursor.uint32(f"type of {name}")
    offset = cursor.uint64(f"offset of {name}")
    return _RawTensor(name, tuple(dims), ggml_type, offset)


def _alignment(buffer: Buffer, order: str, slots: dict[str, _Slot]) -> int:
    """`general.alignment` (a uint32 power of two), or GGUF's default of 32 bytes."""
    slot = slots.get("general.alignment")
    if slot is None:
        return int(gguf.GGUF_DEFAULT_ALIGNMENT)
    if slot.is_array or slot.element_type != _UINT32:
        raise GgufFormatError("general.alignment is not a uint32")
    alignment = int(_decode_elements(buffer, order, slot)[0])
    if alignment == 0 or alignment & (alignment - 1):
        raise GgufFormatError(f"general.alignment {alignment} is not a power of two")
    return alignment


def _size_tensors(
    raw_tensors: list[_RawTensor], data_start: int, file_bytes: int
) -> tuple[TensorInfo, ...]:
    names: set[str] = set()
    tensors = []
    for raw in raw_tensors:
        if raw.name in names:
            raise GgufFormatError(f"duplicate tensor {raw.name!r}")
        names.add(raw.name)
        tensors.append(_sized(raw, data_start, file_bytes))
    return tuple(tensors)


def _sized(raw: _RawTensor, data_start: int, file_bytes: int) -> TensorInfo:
    """Element count and bytes from ggml's block tables; the data must lie in the file."""
    try:
        ggml_type = gguf.GGMLQuantizationType(raw.ggml_type)
    except ValueError as exc:
        raise GgufFormatError(f"tensor {raw.name} has unknown ggml type {raw.ggml_type}") from exc
    block_size, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
    if block_size > 1 and (not raw.dims or raw.dims[0] % block_size):
        raise GgufFormatError(f"tensor {raw.name} rows are not whole {ggml_type.name} blocks")
    n_elements = math.prod(raw.dims)
    n_bytes = n_elements * type_size // block_size
    if n_bytes and data_start + raw.offset + n_bytes > file_bytes:
        raise GgufFormatError(f"tensor {raw.name} ends past the end of the file")
    return TensorInfo(raw.name, int(ggml_type), n_elements, n_bytes)
