"""Reading a GGUF header and serialising a modified one.

Parsing is gguf-py's ``GGUFReader``; what this module adds is an immutable view
of the header that keeps every field's and tensor record's exact bytes, so a
rewritten header differs from the original only in the keys that were edited.
Tensor data is never read here: offsets in the tensor records are relative to
the start of the data section, so the data can be copied as one block.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.constants import GGUF_DEFAULT_ALIGNMENT
from gguf.gguf_reader import ReaderField

from yarn_cli.errors import NotGGUFError
from yarn_cli.gguf.values import Value, pack_field

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
# Arrays longer than this (tokenizer vocabularies, merges) are not decoded: nothing
# in yarn-cli needs their items, and decoding them costs time and memory.
MAX_DECODED_ARRAY = 512


@dataclass(frozen=True)
class Field:
    """One metadata key as stored: its decoded value and its exact bytes."""

    key: str
    type: GGUFValueType
    item_type: GGUFValueType | None
    length: int | None
    value: Any
    raw: bytes = field(repr=False)

    @property
    def is_array(self) -> bool:
        return self.type == GGUFValueType.ARRAY

    def scalar(self) -> Value | None:
        """The field as a typed scalar, or None for arrays."""
        if self.is_array:
            return None
        return Value(self.type, self.value)


@dataclass(frozen=True)
class TensorRecord:
    """One tensor-info record: where the tensor's bytes lie inside the data section."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]
    offset: int
    n_bytes: int
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before the tensor data, plus where the data starts and ends."""

    path: Path
    file_size: int
    version: int
    byteorder: str
    alignment: int
    fields: dict[str, Field]
    tensors: tuple[TensorRecord, ...]
    data_offset: int

    @property
    def endianness(self) -> str:
        return "little" if self.byteorder == "<" else "big"

    @property
    def architecture(self) -> str | None:
        value = self.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def data_size(self) -> int:
        """Bytes from the data start to the end of the file, copied verbatim on rewrite."""
        return self.file_size - self.data_offset

    def fingerprint(self) -> str:
        """sha256 of the header as stored (every key and tensor record): which model, and in which state.

        Two conversions of one model have the same size but different fingerprints; a file
        converted in place changes its fingerprint. No file is read: the bytes are at hand, and
        they are hashed once (a run's record names the model after every trial).
        """
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        digest = hashlib.sha256(f"GGUF{self.version}{self.byteorder}{self.alignment}".encode())
        for f in self.fields.values():
            digest.update(f.raw)
        for t in self.tensors:
            digest.update(t.raw)
        return digest.hexdigest()

    def get(self, key: str, default: Any = None) -> Any:
        found = self.fields.get(key)
        return default if found is None else found.value

    def scalar(self, key: str) -> Value | None:
        found = self.fields.get(key)
        return None if found is None else found.scalar()

    def strings_at(self, key: str, indices: Iterable[int]) -> dict[int, str]:
        """Items of a string array (a vocabulary's tokens) by index; an index past its end is left out.

        A long array is kept undecoded (``MAX_DECODED_ARRAY``): its bytes are walked from the start
        up to the last index asked for, once, and no further.
        """
        found = self.fields.get(key)
        if found is None or found.length is None or found.item_type != GGUFValueType.STRING:
            return {}
        wanted = sorted({i for i in indices if 0 <= i < found.length})
        if not wanted:
            return {}
        if found.value is not None:
            return {i: str(found.value[i]) for i in wanted}
        raw = memoryview(found.raw)
        unpack = struct.Struct(self.byteorder + "Q").unpack_from
        pos = 8 + unpack(raw, 0)[0] + 4 + 4 + 8  # key length, key, type, item type, count
        items: dict[int, str] = {}
        done = 0
        for index in wanted:
            for _ in range(index - done):  # the strings before it: a length, then its bytes
                (size,) = unpack(raw, pos)
                pos += 8 + size
            (size,) = unpack(raw, pos)
            items[index] = bytes(raw[pos + 8 : pos + 8 + size]).decode("utf-8", errors="replace")
            pos, done = pos + 8 + size, index + 1
        return items


def _decode_field(reader_field: Any) -> tuple[GGUFValueType, GGUFValueType | None, int | None, Any]:
    types = reader_field.types
    main = types[0]
    if main != GGUFValueType.ARRAY:
        return main, None, None, reader_field.contents()
    length = int(reader_field.parts[4][0])  # parts: key length, key, type, item type, item count, ...
    item_type = types[-1] if len(types) > 1 else None
    value = reader_field.contents() if length <= MAX_DECODED_ARRAY else None
    return main, item_type, length, value


def _check_magic(path: Path, size: int) -> None:
    if size < 24:
        raise NotGGUFError(f"{path} is not a GGUF file: only {size} bytes long")
    with path.open("rb") as fh:
        head = fh.read(8)
    if head[:4] != GGUF_MAGIC:
        raise NotGGUFError(f"{path} is not a GGUF file (it starts with {head[:4]!r}, not b'GGUF')")
    version = int.from_bytes(head[4:8], "little")
    if version & 0xFFFF == 0:
        version = int.from_bytes(head[4:8], "big")
    if version not in SUPPORTED_VERSIONS:
        raise NotGGUFError(
            f"{path} is GGUF version {version}; only versions 2 and 3 are supported "
            "(re-create it with a current llama.cpp convert script)"
        )


def read_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse a GGUF file's header; raise NotGGUFError with a clear reason when it is not one."""
    path = Path(path)
    if not path.exists():
        raise NotGGUFError(f"{path} does not exist")
    if not path.is_file():
        raise NotGGUFError(f"{path} is not a file")
    size = path.stat().st_size
    _check_magic(path, size)
    try:
        reader = _HeaderReader(path, "r")
    except Exception as exc:  # gguf-py signals a bad header with many exception types
        raise _corrupt(path, exc) from exc
    try:
        return _snapshot(path, size, reader)
    except NotGGUFError:
        raise
    except Exception as exc:  # a value gguf-py parsed but cannot decode (a key that is not UTF-8...)
        raise _corrupt(path, exc) from exc
    finally:
        mm = getattr(reader.data, "_mmap", None)
        del reader
        if mm is not None:
            with contextlib.suppress(BufferError):  # a view is still alive; the GC will close it
                mm.close()


def _corrupt(path: Path, exc: Exception) -> NotGGUFError:
    return NotGGUFError(
        f"{path}: the GGUF header is truncated or corrupt ({type(exc).__name__}: {exc}); "
        "the file may be an incomplete download"
    )


class _HeaderReader(GGUFReader):
    """GGUFReader that parses the tensor records but maps no tensor data.

    yarn-cli never reads tensor data through the reader, and mapping it would turn a
    truncated file into an opaque numpy reshape error instead of a clear message.
    """

    tensor_fields: list[ReaderField]

    def _build_tensors(self, start_offs: int, fields: list[ReaderField]) -> None:
        self.tensor_fields = fields

    def _get_field_parts(
        self, orig_offs: int, raw_type: int
    ) -> tuple[int, list[npt.NDArray[Any]], list[int], list[GGUFValueType]]:
        """Long arrays (vocabularies, merges) as one undecoded block instead of a view per item.

        gguf-py makes one numpy view per array item, which takes seconds for a 50k-token
        vocabulary; yarn-cli never decodes those arrays, it only copies their bytes.
        """
        if raw_type != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        count = int(alen[0])
        item_type = GGUFValueType(int(raw_itype[0]))
        item_size = np.dtype(self.gguf_scalar_to_np[item_type]).itemsize if item_type in self.gguf_scalar_to_np else 0
        if count <= MAX_DECODED_ARRAY or not (item_size or item_type == GGUFValueType.STRING):
            return super()._get_field_parts(orig_offs, raw_type)
        start = orig_offs + 12
        is_str = item_type == GGUFValueType.STRING
        end = self._skip_strings(start, count) if is_str else start + count * item_size
        if end > len(self.data):
            raise ValueError(f"array of {count} items runs past the end of the file")
        return end - orig_offs, [raw_itype, alen, self.data[start:end]], [], [GGUFValueType.ARRAY, item_type]

    def _skip_strings(self, pos: int, count: int) -> int:
        fmt = "<Q" if self.endianess.name == "LITTLE" else ">Q"
        buf = self.data.data  # the mapped bytes, as a memoryview
        size = len(buf)
        for _ in range(count):
            if pos + 8 > size:
                raise ValueError("string array runs past the end of the file")
            pos += 8 + struct.unpack_from(fmt, buf, pos)[0]
        return pos


def _tensor_record(tf: ReaderField, data: Any) -> TensorRecord:
    _name_len, name_data, _n_dims, dims, raw_dtype, offset = tf.parts
    ggml_type = GGMLQuantizationType(int(raw_dtype[0]))
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    n_elements = 1
    for d in dims.tolist():
        n_elements *= int(d)
    nbytes = sum(int(part.nbytes) for part in tf.parts)
    return TensorRecord(
        name=bytes(name_data).decode("utf-8"),
        ggml_type=int(ggml_type),
        shape=tuple(int(d) for d in dims.tolist()),
        offset=int(offset[0]),
        n_bytes=n_elements * type_size // block_size,
        raw=bytes(data[tf.offset : tf.offset + nbytes]),
    )


def _snapshot(path: Path, size: int, reader: _HeaderReader) -> GGUFHeader:
    data = reader.data
    fields: dict[str, Field] = {}
    for key, rf in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        nbytes = sum(int(part.nbytes) for part in rf.parts)
        main, item_type, length, value = _decode_field(rf)
        fields[key] = Field(key, main, item_type, length, value, bytes(data[rf.offset : rf.offset + nbytes]))
    try:
        tensors = [_tensor_record(tf, data) for tf in reader.tensor_fields]
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        raise NotGGUFError(f"{path}: a tensor record in the GGUF header is corrupt ({exc})") from exc
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise NotGGUFError(f"{path}: the GGUF header lists a tensor name twice; the file is corrupt")
    data_offset = int(reader.data_offset)
    for t in tensors:
        end = data_offset + t.offset + t.n_bytes
        if end > size:
            raise NotGGUFError(
                f"{path} is truncated: tensor {t.name!r} ends at byte {end:,} but the file has "
                f"{size:,} bytes; the download is probably incomplete"
            )
    version = int(reader.fields["GGUF.version"].parts[0][0])
    byteorder = "<" if reader.endianess.name == "LITTLE" else ">"
    return GGUFHeader(
        path=path,
        file_size=size,
        version=version,
        byteorder=byteorder,
        alignment=int(reader.alignment) or GGUF_DEFAULT_ALIGNMENT,
        fields=fields,
        tensors=tuple(tensors),
        data_offset=data_offset,
    )


Edits = Mapping[str, Value | None]


def edited_keys(header: GGUFHeader, edits: Edits, key_order: Sequence[str] | None = None) -> list[str]:
    """The header's keys after ``edits``: in place where replaced, dropped where None, new ones last.

    ``key_order`` puts the same keys in another order (an undo puts re-added keys back where they stood).
    """
    keys = [k for k in header.fields if k not in edits or edits[k] is not None]
    keys += [k for k, v in edits.items() if k not in header.fields and v is not None]
    if key_order is None:
        return keys
    if sorted(key_order) != sorted(keys):
        raise ValueError("key_order must name exactly the keys the edited header has")
    return list(key_order)


def build_header(header: GGUFHeader, edits: Edits, key_order: Sequence[str] | None = None) -> bytes:
    """Serialise ``header`` with ``edits`` applied, padded to the data alignment.

    Unedited fields and all tensor records are copied byte for byte, so applying
    edits that restore the original values (in their original order) reproduces the
    original header exactly.
    """
    out = unpadded_header(header, edits, key_order)
    return out + b"\x00" * (-len(out) % header.alignment)


def unpadded_header(header: GGUFHeader, edits: Edits, key_order: Sequence[str] | None = None) -> bytes:
    """The header with ``edits`` applied, up to the end of the tensor records."""
    bo = header.byteorder
    records: list[bytes] = []
    for key in edited_keys(header, edits, key_order):
        value = edits.get(key)
        records.append(header.fields[key].raw if value is None else pack_field(key, value, bo))
    out = bytearray(GGUF_MAGIC)
    out += struct.pack(bo + "I", header.version)
    out += struct.pack(bo + "QQ", len(header.tensors), len(records))
    for record in records:
        out += record
    for tensor in header.tensors:
        out += tensor.raw
    return bytes(out)
