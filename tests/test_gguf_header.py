"""yarn_cli.gguf.header on real GGUF files: the tiny test model, the real SmolLM2, broken copies.

Every expectation about a file's content is checked against gguf-py's own GGUFReader.
"""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.gguf_reader import ReaderField
from ggufs import CONTEXT, FREQ_BASE, HEAD_DIM, write_tiny_llama
from hypothesis import given, settings
from hypothesis import strategies as st

from yarn_cli.errors import NotGGUFError, YarnCliError
from yarn_cli.gguf.header import MAX_DECODED_ARRAY, GGUFHeader, build_header, edited_keys, read_header
from yarn_cli.gguf.values import Value

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def reader_kv(reader: GGUFReader) -> dict[str, ReaderField]:
    """The metadata keys (GGUF.* pseudo-keys excluded) in file order, as gguf-py reads them."""
    return {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def reader_value(rf: ReaderField) -> tuple[GGUFValueType, object]:
    return rf.types[0], rf.contents()


def write_patched(header: GGUFHeader, edits: dict[str, Value | None], out: Path) -> Path:
    """Build a header with ``edits`` and append the original tensor data, like a conversion does."""
    data = header.path.read_bytes()[header.data_offset :]
    out.write_bytes(build_header(header, edits) + data)
    return out


def tensor_bytes(reader: GGUFReader) -> dict[str, bytes]:
    return {t.name: bytes(np.asarray(t.data).tobytes()) for t in reader.tensors}


def assert_matches_reader(header: GGUFHeader, path: Path, reader: GGUFReader | None = None) -> None:
    """read_header's view of ``path`` agrees with GGUFReader's, field by field and tensor by tensor."""
    reader = GGUFReader(path) if reader is None else reader
    kv = reader_kv(reader)
    assert list(header.fields) == list(kv)
    assert int(reader.fields["GGUF.version"].contents()) == header.version
    assert int(reader.fields["GGUF.kv_count"].contents()) == len(header.fields)
    assert int(reader.fields["GGUF.tensor_count"].contents()) == len(header.tensors)
    assert header.byteorder == ("<" if reader.endianess == gguf.GGUFEndian.LITTLE else ">")
    assert header.alignment == reader.alignment
    assert header.data_offset == reader.data_offset
    for key, rf in kv.items():
        got = header.fields[key]
        assert got.key == key
        assert got.type == rf.types[0]
        if rf.types[0] == GGUFValueType.ARRAY:
            assert got.is_array
            assert got.scalar() is None
            assert got.item_type == rf.types[-1]
            assert got.length == len(rf.data)
            if len(rf.data) <= MAX_DECODED_ARRAY:
                assert got.value == rf.contents()
            else:
                assert got.value is None
        else:
            assert not got.is_array
            assert got.value == rf.contents()
            assert header.get(key) == rf.contents()
            assert header.scalar(key) == Value(rf.types[0], rf.contents())
        # the raw bytes of each field are exactly the file's bytes at the field's offset
        assert got.raw == bytes(reader.data[rf.offset : rf.offset + len(got.raw)])
    assert len(header.tensors) == len(reader.tensors)
    for ours, theirs in zip(header.tensors, reader.tensors, strict=True):
        assert ours.name == theirs.name
        assert ours.ggml_type == int(theirs.tensor_type)
        assert ours.shape == tuple(int(x) for x in theirs.shape)
        assert ours.n_bytes == int(theirs.n_bytes)
        assert header.data_offset + ours.offset == int(theirs.data_offset)


def assert_data_section_sane(header: GGUFHeader) -> None:
    assert header.data_offset % header.alignment == 0
    assert header.data_size == header.file_size - header.data_offset
    end_prev = 0
    for t in sorted(header.tensors, key=lambda t: t.offset):
        assert t.offset % header.alignment == 0
        assert t.offset >= end_prev  # no overlap
        assert t.n_bytes > 0
        assert t.offset + t.n_bytes <= header.data_size
        end_prev = t.offset + t.n_bytes


# --------------------------------------------------------------------------------------
# read_header on real files
# --------------------------------------------------------------------------------------


def test_read_header_tiny(tiny_model: Path) -> None:
    header = read_header(tiny_model)
    assert header.path == tiny_model
    assert header.file_size == tiny_model.stat().st_size
    assert header.version == 3
    assert header.endianness == "little"
    assert header.byteorder == "<"
    assert header.architecture == "llama"
    assert header.alignment == 32
    assert len(header.tensors) == 21  # embd + 9 per layer * 2 + output_norm + output
    assert header.get("llama.context_length") == CONTEXT
    assert header.scalar("llama.context_length") == Value(GGUFValueType.UINT32, CONTEXT)
    assert header.scalar("llama.rope.freq_base") == Value(GGUFValueType.FLOAT32, FREQ_BASE)
    assert header.get("llama.rope.dimension_count") == HEAD_DIM
    assert header.get("general.name") == "tiny-test-llama"
    assert header.get("no.such.key") is None
    assert header.get("no.such.key", 7) == 7
    assert header.scalar("no.such.key") is None
    tokens = header.fields["tokenizer.ggml.tokens"]
    assert tokens.item_type == GGUFValueType.STRING
    assert tokens.value[:3] == ["<unk>", "<s>", "</s>"]
    assert header.tensors[0].name == "token_embd.weight"
    assert header.tensors[0].shape == (64, 267)
    assert header.tensors[0].n_bytes == 64 * 267 * 4
    # the last tensor ends exactly at the end of the file (the writer pads only between tensors)
    last = max(header.tensors, key=lambda t: t.offset)
    assert header.data_offset + last.offset + last.n_bytes == header.file_size
    assert_data_section_sane(header)
    assert_matches_reader(header, tiny_model)


# gguf-py needs about 4 s to parse SmolLM2's header (its 49k-token vocabulary), so it is parsed once.


@pytest.fixture(scope="module")
def smollm2_header(smollm2: Path) -> GGUFHeader:
    return read_header(smollm2)


@pytest.mark.slow
def test_read_header_smollm2(smollm2: Path, smollm2_header: GGUFHeader) -> None:
    header = smollm2_header
    assert header.version == 3
    assert header.endianness == "little"
    assert header.byteorder == "<"
    assert header.architecture == "llama"
    assert header.alignment == 32
    assert len(header.tensors) == 272
    assert header.get("llama.context_length") == 8192
    assert header.get("llama.rope.freq_base") == 100000.0
    assert header.get("llama.rope.dimension_count") == 64
    assert header.get("llama.block_count") == 30
    # the vocabulary is too long to decode, but its type and length are known
    tokens = header.fields["tokenizer.ggml.tokens"]
    assert tokens.is_array and tokens.length > MAX_DECODED_ARRAY and tokens.value is None
    assert_data_section_sane(header)
    assert_matches_reader(header, smollm2)


def test_read_header_accepts_str_path(tiny_model: Path) -> None:
    assert read_header(str(tiny_model)).path == tiny_model


def test_read_header_custom_alignment(tmp_path: Path) -> None:
    path = tmp_path / "aligned.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_custom_alignment(64)
    writer.add_uint32("llama.context_length", 512)
    writer.add_tensor("a.weight", np.arange(5, dtype=np.float32))
    writer.add_tensor("b.weight", np.arange(7, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_header(path)
    assert header.alignment == 64
    assert header.get("general.alignment") == 64
    assert [t.offset for t in header.tensors] == [0, 64]
    assert_data_section_sane(header)
    assert_matches_reader(header, path)
    raw = path.read_bytes()
    assert build_header(header, {}) == raw[: header.data_offset]
    out = write_patched(header, {"llama.context_length": Value(GGUFValueType.UINT32, 2048)}, tmp_path / "o.gguf")
    reader = GGUFReader(out)
    assert reader.data_offset % 64 == 0
    assert reader.fields["llama.context_length"].contents() == 2048
    assert tensor_bytes(reader) == tensor_bytes(GGUFReader(path))


# --------------------------------------------------------------------------------------
# build_header
# --------------------------------------------------------------------------------------


def test_build_header_identity_tiny(tiny_model: Path) -> None:
    header = read_header(tiny_model)
    built = build_header(header, {})
    assert len(built) == header.data_offset
    assert built == tiny_model.read_bytes()[: header.data_offset]


@pytest.mark.slow
def test_build_header_identity_smollm2(smollm2: Path, smollm2_header: GGUFHeader) -> None:
    header = smollm2_header
    built = build_header(header, {})
    assert len(built) == header.data_offset
    with smollm2.open("rb") as fh:
        assert built == fh.read(header.data_offset)


@pytest.mark.slow
def test_build_header_restoring_values_is_identity(smollm2: Path, smollm2_header: GGUFHeader) -> None:
    header = smollm2_header
    edits = {
        "llama.context_length": header.scalar("llama.context_length"),
        "general.name": header.scalar("general.name"),
        "llama.rope.freq_base": header.scalar("llama.rope.freq_base"),
        "no.such.key": None,  # deleting an absent key does nothing
    }
    with smollm2.open("rb") as fh:
        assert build_header(header, edits) == fh.read(header.data_offset)


def test_build_header_edits(tiny_model: Path, tmp_path: Path) -> None:
    header = read_header(tiny_model)
    original_keys = list(header.fields)
    edits: dict[str, Value | None] = {
        "llama.context_length": Value(GGUFValueType.UINT32, 1024),  # same type
        "tokenizer.ggml.bos_token_id": Value(GGUFValueType.INT32, -3),  # type changed
        "general.name": None,  # deleted
        "llama.rope.scaling.type": Value(GGUFValueType.STRING, "yarn"),
        "llama.rope.scaling.factor": Value(GGUFValueType.FLOAT32, 4.0),
        "llama.rope.scaling.original_context_length": Value(GGUFValueType.UINT32, 256),
        "llama.rope.scaling.finetuned": Value(GGUFValueType.BOOL, False),
        "test.bool_true": Value(GGUFValueType.BOOL, True),
        "test.u8": Value(GGUFValueType.UINT8, 255),
        "test.i8": Value(GGUFValueType.INT8, -128),
        "test.u16": Value(GGUFValueType.UINT16, 65535),
        "test.i16": Value(GGUFValueType.INT16, -32768),
        "test.u64": Value(GGUFValueType.UINT64, 2**64 - 1),
        "test.i64": Value(GGUFValueType.INT64, -(2**63)),
        "test.f64": Value(GGUFValueType.FLOAT64, math.pi),
        "test.unicode": Value(GGUFValueType.STRING, "Ünïcødé ✓ 長い"),
        "test.empty": Value(GGUFValueType.STRING, ""),
    }
    built = build_header(header, edits)
    assert len(built) % header.alignment == 0
    out = tmp_path / "patched.gguf"
    out.write_bytes(built + tiny_model.read_bytes()[header.data_offset :])

    reader = GGUFReader(out)
    kv = reader_kv(reader)
    new_keys = [k for k in edits if k not in original_keys and edits[k] is not None]
    expected_order = [k for k in original_keys if k != "general.name"] + new_keys
    assert list(kv) == expected_order
    assert edited_keys(header, edits) == expected_order
    # replaced keys keep their position
    assert list(kv).index("llama.context_length") == original_keys.index("llama.context_length") - 1
    assert list(kv).index("tokenizer.ggml.bos_token_id") == original_keys.index("tokenizer.ggml.bos_token_id") - 1
    assert "general.name" not in kv
    # new keys go last, in the order given
    assert list(kv)[-len(new_keys) :] == new_keys
    assert int(reader.fields["GGUF.kv_count"].contents()) == len(expected_order)
    assert int(reader.fields["GGUF.tensor_count"].contents()) == len(header.tensors)

    for key, value in edits.items():
        if value is None:
            continue
        vtype, got = reader_value(kv[key])
        assert vtype == value.type, key
        if value.type == GGUFValueType.FLOAT32:
            assert got == pytest.approx(value.value, rel=1e-7)
        else:
            assert got == value.value, key
    # untouched keys keep their values and their exact bytes
    patched = read_header(out)
    for key in expected_order:
        if key not in edits:
            assert patched.fields[key].raw == header.fields[key].raw
            assert patched.fields[key].value == header.fields[key].value
    assert [t.raw for t in patched.tensors] == [t.raw for t in header.tensors]
    assert tensor_bytes(reader) == tensor_bytes(GGUFReader(tiny_model))
    assert_matches_reader(patched, out)


def test_build_header_delete_everything_but_architecture(tiny_model: Path, tmp_path: Path) -> None:
    header = read_header(tiny_model)
    edits: dict[str, Value | None] = {k: None for k in header.fields if k != "general.architecture"}
    out = write_patched(header, edits, tmp_path / "bare.gguf")
    reader = GGUFReader(out)
    assert list(reader_kv(reader)) == ["general.architecture"]
    assert len(reader.tensors) == len(header.tensors)
    assert read_header(out).architecture == "llama"


@pytest.mark.slow
def test_build_header_patched_smollm2_reads_back(smollm2: Path, smollm2_header: GGUFHeader, tmp_path: Path) -> None:
    header = smollm2_header
    edits = {
        "llama.context_length": Value(GGUFValueType.UINT32, 32768),
        "llama.rope.scaling.type": Value(GGUFValueType.STRING, "yarn"),
        "llama.rope.scaling.factor": Value(GGUFValueType.FLOAT32, 4.0),
        "llama.rope.scaling.original_context_length": Value(GGUFValueType.UINT32, 8192),
    }
    built = build_header(header, edits)
    out = tmp_path / "smollm2-yarn.gguf"
    with smollm2.open("rb") as src, out.open("wb") as dst:
        dst.write(built)
        src.seek(header.data_offset)
        while chunk := src.read(1 << 24):
            dst.write(chunk)
    patched = read_header(out)
    assert patched.file_size == header.file_size - header.data_offset + len(built)
    assert list(patched.fields) == edited_keys(header, edits)
    assert patched.scalar("llama.context_length") == Value(GGUFValueType.UINT32, 32768)
    assert patched.scalar("llama.rope.scaling.type") == Value(GGUFValueType.STRING, "yarn")
    assert patched.scalar("llama.rope.scaling.factor") == Value(GGUFValueType.FLOAT32, 4.0)
    assert patched.scalar("llama.rope.scaling.original_context_length") == Value(GGUFValueType.UINT32, 8192)
    assert [(t.name, t.offset, t.n_bytes) for t in patched.tensors] == [
        (t.name, t.offset, t.n_bytes) for t in header.tensors
    ]
    for key in patched.fields:  # everything not edited is byte-identical
        if key not in edits:
            assert patched.fields[key].raw == header.fields[key].raw


@pytest.fixture(scope="module")
def tiny_header(tmp_path_factory: pytest.TempPathFactory) -> GGUFHeader:
    return read_header(write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf"))


KEY_NAMES = st.text(alphabet="abcxyz._", min_size=1, max_size=12).map(lambda s: "new." + s)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_build_header_edit_property(tiny_header: GGUFHeader, data: st.DataObject) -> None:
    keys = list(tiny_header.fields)
    deleted = data.draw(st.sets(st.sampled_from(keys), max_size=5), label="deleted")
    replaced = data.draw(
        st.dictionaries(st.sampled_from(keys), st.integers(0, 2**32 - 1), max_size=5), label="replaced"
    )
    added = data.draw(st.dictionaries(KEY_NAMES, st.text(max_size=20), max_size=5), label="added")
    edits: dict[str, Value | None] = {}
    for key, number in replaced.items():
        edits[key] = Value(GGUFValueType.UINT32, number)
    for key in deleted:
        edits[key] = None
    for key, text in added.items():
        edits[key] = Value(GGUFValueType.STRING, text)

    expected = [k for k in keys if edits.get(k, "keep") is not None] + list(added)
    built = build_header(tiny_header, edits)
    assert len(built) % tiny_header.alignment == 0
    with tempfile.TemporaryDirectory() as tmp:
        out = write_patched(tiny_header, edits, Path(tmp) / "p.gguf")
        reader = GGUFReader(out)
        kv = reader_kv(reader)
        assert list(kv) == expected
        for key in expected:
            value = edits.get(key)
            if value is None:
                assert bytes(reader.data[kv[key].offset : kv[key].offset + len(tiny_header.fields[key].raw)]) == (
                    tiny_header.fields[key].raw
                )
            else:
                assert reader_value(kv[key]) == (value.type, value.value)
        assert len(reader.tensors) == len(tiny_header.tensors)
        del reader, kv


# --------------------------------------------------------------------------------------
# big-endian files
# --------------------------------------------------------------------------------------


def test_big_endian(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG)
    header = read_header(path)
    assert header.endianness == "big"
    assert header.byteorder == ">"
    assert header.version == 3
    assert header.architecture == "llama"
    assert header.get("llama.context_length") == CONTEXT
    assert header.get("llama.rope.freq_base") == FREQ_BASE
    assert header.tensors[0].shape == (64, 267)
    assert_data_section_sane(header)
    assert_matches_reader(header, path)
    assert build_header(header, {}) == path.read_bytes()[: header.data_offset]

    edits = {
        "llama.context_length": Value(GGUFValueType.UINT32, 1024),
        "llama.rope.scaling.type": Value(GGUFValueType.STRING, "yarn"),
        "llama.rope.scaling.factor": Value(GGUFValueType.FLOAT32, 4.0),
        "llama.rope.scaling.original_context_length": Value(GGUFValueType.UINT32, CONTEXT),
        "llama.rope.scaling.finetuned": Value(GGUFValueType.BOOL, True),
        "test.u64": Value(GGUFValueType.UINT64, 2**40 + 3),
        "test.f64": Value(GGUFValueType.FLOAT64, -2.5),
        "general.name": None,
    }
    out = write_patched(header, edits, tmp_path / "be-yarn.gguf")
    reader = GGUFReader(out)
    assert reader.endianess == gguf.GGUFEndian.BIG
    kv = reader_kv(reader)
    assert list(kv) == edited_keys(header, edits)
    assert "general.name" not in kv
    for key, value in edits.items():
        if value is not None:
            assert reader_value(kv[key]) == (value.type, value.value), key
    assert kv["llama.rope.freq_base"].contents() == FREQ_BASE
    assert tensor_bytes(reader) == tensor_bytes(GGUFReader(path))
    patched = read_header(out)
    assert patched.byteorder == ">"
    assert patched.scalar("llama.context_length") == Value(GGUFValueType.UINT32, 1024)
    assert_matches_reader(patched, out)


# --------------------------------------------------------------------------------------
# GGUF version 2
# --------------------------------------------------------------------------------------


def test_version_2_is_read_and_kept(tiny_model: Path, tmp_path: Path) -> None:
    raw = bytearray(tiny_model.read_bytes())
    raw[4:8] = struct.pack("<I", 2)
    path = tmp_path / "v2.gguf"
    path.write_bytes(bytes(raw))
    header = read_header(path)
    assert header.version == 2
    built = build_header(header, {"llama.context_length": Value(GGUFValueType.UINT32, 512)})
    assert struct.unpack("<I", built[4:8]) == (2,)


# --------------------------------------------------------------------------------------
# files that are not (complete) GGUF models
# --------------------------------------------------------------------------------------


def expect_not_gguf(path: Path, *words: str) -> str:
    with pytest.raises(NotGGUFError) as info:
        read_header(path)
    message = str(info.value)
    assert isinstance(info.value, YarnCliError)
    assert "\n" not in message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return message


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "model.gguf"
    message = expect_not_gguf(path, "does not exist")
    assert str(path) in message


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.gguf"
    folder.mkdir()
    expect_not_gguf(folder, "not a file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    expect_not_gguf(path, "not a GGUF file", "0 bytes")


@pytest.mark.parametrize("size", [1, 4, 8, 23])
def test_too_short_file(tmp_path: Path, size: int) -> None:
    path = tmp_path / "short.gguf"
    path.write_bytes((b"GGUF\x03\x00\x00\x00" + b"\x00" * 20)[:size])
    expect_not_gguf(path, "not a GGUF file", f"{size} bytes")


def test_random_bytes(tmp_path: Path) -> None:
    data = np.random.default_rng(1234).bytes(4096)
    assert data[:4] != b"GGUF"
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    message = expect_not_gguf(path, "not a GGUF file", "GGUF")
    assert repr(data[:4]) in message


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "README.gguf"
    path.write_text("This is a text file, not a model.\n" * 10)
    expect_not_gguf(path, "not a GGUF file", "b'This'")


def test_gguf_magic_then_random_bytes(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<I", 3) + np.random.default_rng(99).bytes(4000)
    path = tmp_path / "garbage.gguf"
    path.write_bytes(data)
    expect_not_gguf(path, "corrupt")


@pytest.mark.parametrize(("version", "endian"), [(1, "<"), (1, ">"), (4, "<"), (0x7FFF, "<")])
def test_unsupported_version(tiny_model: Path, tmp_path: Path, version: int, endian: str) -> None:
    raw = tiny_model.read_bytes()
    path = tmp_path / f"v{version}.gguf"
    path.write_bytes(b"GGUF" + struct.pack(endian + "I", version) + raw[8:])
    expect_not_gguf(path, f"version {version}", "2 and 3")


def test_version_1_minimal(tmp_path: Path) -> None:
    path = tmp_path / "v1.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 1) + struct.pack("<II", 0, 0) + b"\x00" * 16)
    expect_not_gguf(path, "version 1")


def kv_section_end(header: GGUFHeader) -> int:
    return 24 + sum(len(f.raw) for f in header.fields.values())


def test_truncated_in_header(tiny_model: Path, tmp_path: Path) -> None:
    raw = tiny_model.read_bytes()
    header = read_header(tiny_model)
    kv_end = kv_section_end(header)
    tensor_info_end = kv_end + sum(len(t.raw) for t in header.tensors)
    cuts = [24, 25, 30, 57, 100, 1000, header.data_offset // 2, kv_end - 1, kv_end + 10, tensor_info_end - 1]
    assert all(c < tensor_info_end for c in cuts)
    for cut in cuts:
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(raw[:cut])
        expect_not_gguf(path, "header", "truncated or corrupt")


def test_truncated_in_tensor_data(tiny_model: Path, tmp_path: Path) -> None:
    raw = tiny_model.read_bytes()
    header = read_header(tiny_model)
    for cut in [header.data_offset, header.data_offset + 1, header.data_offset + 100_000, len(raw) - 1]:
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(raw[:cut])
        message = expect_not_gguf(path, "truncated", f"{cut:,} bytes")
        assert "incomplete" in message


def first_string_length_offsets(header: GGUFHeader) -> tuple[int, int]:
    """(offset of the first key's length, offset of the first value's string length)."""
    first = next(iter(header.fields.values()))
    assert first.type == GGUFValueType.STRING
    key_len_at = 24
    value_len_at = key_len_at + 8 + len(first.key.encode()) + 4
    return key_len_at, value_len_at


@pytest.mark.parametrize("huge", [10**6, 2**40, 2**63, 2**64 - 1])
@pytest.mark.parametrize("which", ["key", "value"])
def test_corrupt_string_length(tiny_model: Path, tmp_path: Path, huge: int, which: str) -> None:
    header = read_header(tiny_model)
    key_at, value_at = first_string_length_offsets(header)
    at = key_at if which == "key" else value_at
    raw = bytearray(tiny_model.read_bytes())
    assert struct.unpack("<Q", raw[at : at + 8])[0] in (len("general.architecture"), len("llama"))
    raw[at : at + 8] = struct.pack("<Q", huge)
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(bytes(raw))
    expect_not_gguf(path, "corrupt")


def test_corrupt_string_length_big_endian(tmp_path: Path) -> None:
    source = write_tiny_llama(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG)
    header = read_header(source)
    _, at = first_string_length_offsets(header)
    raw = bytearray(source.read_bytes())
    assert struct.unpack(">Q", raw[at : at + 8])[0] == len("llama")
    raw[at : at + 8] = struct.pack(">Q", 2**62)
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(bytes(raw))
    expect_not_gguf(path, "corrupt")


def test_corrupt_tensor_type(tiny_model: Path, tmp_path: Path) -> None:
    """A tensor record with an unknown ggml type is reported, not raised as a ValueError."""
    header = read_header(tiny_model)
    at = kv_section_end(header)
    first = header.tensors[0]
    type_at = at + len(first.raw) - 8 - 4
    raw = bytearray(tiny_model.read_bytes())
    assert struct.unpack("<I", raw[type_at : type_at + 4])[0] == first.ggml_type
    raw[type_at : type_at + 4] = struct.pack("<I", 9999)
    path = tmp_path / "badtype.gguf"
    path.write_bytes(bytes(raw))
    expect_not_gguf(path, "corrupt")


# --- long arrays (vocabularies) are kept as raw blocks -------------------------------------


@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_long_arrays_kept_exactly(tmp_path: Path, endianess: gguf.GGUFEndian) -> None:
    n = MAX_DECODED_ARRAY + 904
    path = tmp_path / "vocab.gguf"
    writer = GGUFWriter(path, "llama", endianess=endianess)
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" * (i % 5) for i in range(n)])
    writer.add_array("tokenizer.ggml.scores", [float(i) / 7 for i in range(n)])
    writer.add_array("short.list", [1, 2, 3])
    writer.add_uint32("llama.context_length", 4096)
    weights = np.arange(8, dtype=np.float32)
    writer.add_tensor("t.weight", weights.byteswap() if endianess == gguf.GGUFEndian.BIG else weights)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_header(path)
    tokens, scores = header.fields["tokenizer.ggml.tokens"], header.fields["tokenizer.ggml.scores"]
    assert (tokens.length, tokens.item_type, tokens.value) == (n, GGUFValueType.STRING, None)
    assert (scores.length, scores.item_type, scores.value) == (n, GGUFValueType.FLOAT32, None)
    assert header.get("short.list") == [1, 2, 3]
    assert header.get("llama.context_length") == 4096
    assert build_header(header, {}) == path.read_bytes()[: header.data_offset]
    edited = write_patched(header, {"llama.context_length": Value(GGUFValueType.UINT32, 8192)}, tmp_path / "e.gguf")
    reader = GGUFReader(edited)
    assert reader.fields["tokenizer.ggml.tokens"].contents() == [f"tok{i}" * (i % 5) for i in range(n)]
    assert reader.fields["llama.context_length"].contents() == 8192


@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_tokens_are_read_from_an_undecoded_vocabulary(tmp_path: Path, endianess: gguf.GGUFEndian) -> None:
    n = MAX_DECODED_ARRAY + 904
    tokens = [f"tok{i}" * (i % 5) + ("é" if i % 7 == 0 else "") for i in range(n)]
    path = tmp_path / "vocab.gguf"
    writer = GGUFWriter(path, "llama", endianess=endianess)
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("short.tokens", ["a", "b", "c"])
    writer.add_array("numbers", list(range(n)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    header = read_header(path)
    assert header.fields["tokenizer.ggml.tokens"].value is None  # kept as bytes, never decoded
    wanted = [0, 1, 5, 7, 511, 512, 1000, n - 1]
    assert header.strings_at("tokenizer.ggml.tokens", wanted) == {i: tokens[i] for i in wanted}
    # an index past the end, or a negative one, is left out; so are arrays of something else, and absent keys
    assert header.strings_at("tokenizer.ggml.tokens", [n, -1, 3]) == {3: tokens[3]}
    assert header.strings_at("short.tokens", [2, 3]) == {2: "c"}
    assert header.strings_at("numbers", [1]) == {}
    assert header.strings_at("missing", [1]) == {}
    assert GGUFReader(path).fields["tokenizer.ggml.tokens"].contents() == tokens  # as gguf-py reads them


@pytest.mark.parametrize("cut", [50_000, 400_000, 1_200_000])
def test_truncated_inside_a_vocabulary(smollm2: Path, tmp_path: Path, cut: int) -> None:
    broken = tmp_path / "cut.gguf"
    with smollm2.open("rb") as fh:
        broken.write_bytes(fh.read(cut))
    expect_not_gguf(broken, "truncated or corrupt")
