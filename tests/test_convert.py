"""Conversion planning and writing on real GGUF files (gguf-py reads back every output)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType
from ggufs import CONTEXT, FREQ_BASE, HEAD_DIM, write_tiny_llama
from helpers import interrupt_on_call, sha256
from logits import TINY_TOKENS, logits

from yarn_cli.conversion import ConvertRequest, convert_file, plan_conversion
from yarn_cli.errors import InputError, OutputError, UnsupportedModelError
from yarn_cli.gguf.header import read_header
from yarn_cli.model import open_model
from yarn_cli.rope.keys import RECORD_KEY, VERSION_KEY
from yarn_cli.rope.scaling import Method
from yarn_cli.rope.variants import parse_variant


def fields(path: Path) -> dict[str, tuple[GGUFValueType, object]]:
    """Every scalar key of a file as gguf-py's own reader sees it: (type, value)."""
    reader = GGUFReader(path)
    out = {}
    for key, field in reader.fields.items():
        if field.types and field.types[0] != GGUFValueType.ARRAY and not key.startswith("GGUF."):
            out[key] = (field.types[0], field.contents())
    return out


def tensor_bytes(path: Path) -> dict[str, bytes]:
    return {t.name: bytes(t.data.tobytes()) for t in GGUFReader(path).tensors}


def convert(path: Path, **kwargs: object) -> Path:
    request_fields = {k: kwargs.pop(k) for k in list(kwargs) if k in ConvertRequest.__dataclass_fields__}
    result = convert_file(path, ConvertRequest(**request_fields), **kwargs)  # type: ignore[arg-type]
    return result.outputs[0].path


# --- what each method writes -------------------------------------------------------------------


def test_yarn_writes_type_factor_original_and_raised_context(tiny_model: Path) -> None:
    out = convert(tiny_model, factor=4.0)
    assert out == tiny_model.with_name("tiny.yarn-4x.gguf")
    f = fields(out)
    assert f["llama.rope.scaling.type"] == (GGUFValueType.STRING, "yarn")
    assert f["llama.rope.scaling.factor"] == (GGUFValueType.FLOAT32, 4.0)
    assert f["llama.rope.scaling.original_context_length"] == (GGUFValueType.UINT32, CONTEXT)
    assert f["llama.context_length"] == (GGUFValueType.UINT32, 4 * CONTEXT)
    assert f["llama.rope.freq_base"] == (GGUFValueType.FLOAT32, FREQ_BASE)
    record = json.loads(f[RECORD_KEY][1])  # type: ignore[arg-type]
    assert record["llama.context_length"] == {"type": "UINT32", "value": CONTEXT, "index": 2}  # its place, for undo
    assert record["llama.rope.scaling.type"] is None
    assert f[VERSION_KEY][0] == GGUFValueType.STRING


def test_linear_writes_type_factor_and_context(tiny_model: Path) -> None:
    f = fields(convert(tiny_model, method=Method.LINEAR, factor=2.0))
    assert f["llama.rope.scaling.type"] == (GGUFValueType.STRING, "linear")
    assert f["llama.rope.scaling.factor"] == (GGUFValueType.FLOAT32, 2.0)
    assert f["llama.context_length"] == (GGUFValueType.UINT32, 2 * CONTEXT)
    assert "llama.rope.scaling.original_context_length" not in f


def test_ntk_raises_base_and_context_without_scaling_type(tiny_model: Path) -> None:
    out = convert(tiny_model, method=Method.NTK, factor=2.0)
    assert out.name == "tiny.ntk-2x.gguf"
    f = fields(out)
    expected = FREQ_BASE * 2.0 ** (HEAD_DIM / (HEAD_DIM - 2))
    assert f["llama.rope.freq_base"][0] == GGUFValueType.FLOAT32
    assert math.isclose(f["llama.rope.freq_base"][1], expected, rel_tol=1e-6)  # type: ignore[arg-type]
    assert f["llama.context_length"] == (GGUFValueType.UINT32, 2 * CONTEXT)
    assert "llama.rope.scaling.type" not in f


def test_ntk_by_parts_writes_yarn_and_the_attn_factor_that_cancels_its_temperature(tiny_model: Path) -> None:
    out = convert(tiny_model, method=Method.NTK_BY_PARTS, factor=2.0, beta_fast=16.0)
    assert out == tiny_model.with_name("tiny.ntk-by-parts-2x.gguf")
    f = fields(out)
    assert f["llama.rope.scaling.type"] == (GGUFValueType.STRING, "yarn")
    assert f["llama.rope.scaling.factor"] == (GGUFValueType.FLOAT32, 2.0)
    assert f["llama.rope.scaling.original_context_length"] == (GGUFValueType.UINT32, CONTEXT)
    assert f["llama.context_length"] == (GGUFValueType.UINT32, 2 * CONTEXT)
    kind, attn = f["llama.rope.scaling.attn_factor"]
    assert kind == GGUFValueType.FLOAT32
    assert attn == float(np.float32(1 / (0.1 * math.log(2) + 1)))
    assert f["llama.rope.scaling.yarn_beta_fast"] == (GGUFValueType.FLOAT32, 16.0)  # YaRN's ramp options apply


def test_a_ntk_by_parts_file_runs_as_the_variant_does(tiny_model: Path) -> None:
    """What llama.cpp makes of the written keys is what passkey and perplexity run as ntk-by-parts:2."""
    out = convert(tiny_model, method=Method.NTK_BY_PARTS, factor=2.0)
    variant = parse_variant("ntk-by-parts:2").runtime(2 * CONTEXT, open_model(tiny_model).rope)
    assert variant is not None
    as_file = logits(out, TINY_TOKENS, CONTEXT)
    assert np.array_equal(as_file, logits(tiny_model, TINY_TOKENS, CONTEXT, **variant.as_kwargs()))
    assert np.abs(as_file - logits(convert(tiny_model, factor=2.0), TINY_TOKENS, CONTEXT)).max() > 1e-2


def test_context_derives_factor(tiny_model: Path) -> None:
    f = fields(convert(tiny_model, context=640))
    assert f["llama.context_length"][1] == 640
    assert f["llama.rope.scaling.factor"][1] == pytest.approx(640 / CONTEXT)
    assert f["llama.rope.scaling.original_context_length"][1] == CONTEXT


def test_original_context_override(tiny_model: Path) -> None:
    f = fields(convert(tiny_model, factor=2.0, original_context=200))
    assert f["llama.rope.scaling.original_context_length"][1] == 200
    assert f["llama.context_length"][1] == 400


def test_yarn_options_written_with_llama_cpp_types(tiny_model: Path) -> None:
    request = ConvertRequest(factor=4.0, attn_factor=1.5, beta_fast=16.0, beta_slow=2.0, finetuned=True)
    plan = plan_conversion(open_model(tiny_model), request)
    assert any("yarn_beta_fast" in w for w in plan.warnings)  # llama ignores the beta keys
    assert any("informational" in w for w in plan.warnings)
    f = fields(convert(tiny_model, factor=4.0, attn_factor=1.5, beta_fast=16.0, beta_slow=2.0, finetuned=True))
    assert f["llama.rope.scaling.attn_factor"] == (GGUFValueType.FLOAT32, 1.5)
    assert f["llama.rope.scaling.yarn_beta_fast"] == (GGUFValueType.FLOAT32, 16.0)
    assert f["llama.rope.scaling.yarn_beta_slow"] == (GGUFValueType.FLOAT32, 2.0)
    assert f["llama.rope.scaling.finetuned"] == (GGUFValueType.BOOL, True)


@pytest.mark.parametrize(
    ("key", "stored", "request_kwargs"),
    [
        ("llama.context_length", (CONTEXT, GGUFValueType.UINT16), {"context": 131072}),
        ("llama.context_length", (CONTEXT, GGUFValueType.INT32), {"context": 2**31}),
        ("llama.rope.scaling.factor", (1, GGUFValueType.UINT32), {"factor": 2.5}),
    ],
    ids=["uint16-context", "int32-context", "uint32-factor"],
)
def test_a_value_the_files_type_cannot_hold_is_written_in_llama_cpps_type(
    tmp_path: Path, key: str, stored: tuple[int, GGUFValueType], request_kwargs: dict
) -> None:
    """A key kept in the file's own type, except where that type cannot hold the new value; the undo is exact."""
    model = write_tiny_llama(tmp_path / "narrow.gguf", extra={key: stored})
    out = convert(model, **request_kwargs)
    f = fields(out)
    factor = request_kwargs.get("factor", request_kwargs.get("context", 0) / CONTEXT)
    assert f["llama.context_length"] == (GGUFValueType.UINT32, round(factor * CONTEXT))
    assert f["llama.rope.scaling.factor"] == (GGUFValueType.FLOAT32, factor)
    assert sha256(convert(out, method=Method.NONE)) == sha256(model)


def test_tensor_bytes_and_other_keys_unchanged(tiny_model: Path) -> None:
    out = convert(tiny_model, factor=8.0)
    assert tensor_bytes(out) == tensor_bytes(tiny_model)
    before, after = fields(tiny_model), fields(out)
    touched = {k for k in after if k.startswith(("llama.rope", "llama.context", "yarn_cli."))}
    assert {k: v for k, v in after.items() if k not in touched} == {k: v for k, v in before.items() if k not in touched}
    reader_in, reader_out = GGUFReader(tiny_model), GGUFReader(out)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        assert reader_out.fields[key].contents() == reader_in.fields[key].contents()


# --- undo and re-conversion ----------------------------------------------------------------


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"factor": 4.0},
        {"method": Method.LINEAR, "factor": 3.0},
        {"method": Method.NTK, "factor": 2.0},
        {"method": Method.NTK_BY_PARTS, "factor": 2.0},
    ],
)
def test_none_restores_the_original_file_byte_for_byte(tiny_model: Path, request_kwargs: dict) -> None:
    original = sha256(tiny_model)
    scaled = convert(tiny_model, **request_kwargs)
    restored = convert(scaled, method=Method.NONE)
    assert restored.name == "tiny.orig.gguf"
    assert sha256(restored) == original
    assert sha256(tiny_model) == original  # the input was never touched


TRAINED_SCALINGS = {
    "yarn x4 with attn_factor": {
        "llama.rope.scaling.type": ("yarn", GGUFValueType.STRING),
        "llama.rope.scaling.factor": (4.0, GGUFValueType.FLOAT32),
        "llama.rope.scaling.original_context_length": (64, GGUFValueType.UINT32),
        "llama.rope.scaling.attn_factor": (1.25, GGUFValueType.FLOAT32),
    },
    "linear x8 (as Gemma 3)": {
        "llama.rope.scaling.type": ("linear", GGUFValueType.STRING),
        "llama.rope.scaling.factor": (8.0, GGUFValueType.FLOAT32),
    },
}


@pytest.mark.parametrize("trained", list(TRAINED_SCALINGS))
@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"factor": 2.0},
        {"method": Method.LINEAR, "factor": 2.0},
        {"method": Method.NTK, "factor": 2.0},
        {"method": Method.NTK_BY_PARTS, "factor": 2.0},
    ],
    ids=["yarn", "linear", "ntk", "ntk-by-parts"],
)
@pytest.mark.parametrize("in_place", [False, True], ids=["copy", "in-place"])
def test_undo_is_byte_exact_when_the_file_had_scaling_keys_of_its_own(
    tmp_path: Path, trained: str, request_kwargs: dict, in_place: bool
) -> None:
    """The scaling keys stand among the RoPE keys, not last: an undo puts them back where they were."""
    model = write_tiny_llama(tmp_path / "trained.gguf", extra=TRAINED_SCALINGS[trained], extra_with_rope=True)
    keys = list(read_header(model).fields)
    assert keys.index("llama.rope.scaling.type") < keys.index("tokenizer.ggml.model")  # in the middle
    original = sha256(model)
    # forced over the trained scaling; replacing YaRN x4 by linear or NTK x2 over its original 64 tokens
    # shortens the context (256 -> 128), which must be asked for too
    request = ConvertRequest(force=True, allow_shorter_context=True, **request_kwargs)
    if in_place:
        convert_file(model, request, in_place=True)
        assert sha256(model) != original
        convert_file(model, ConvertRequest(method=Method.NONE), in_place=True)
        assert sha256(model) == original
    else:
        scaled = convert_file(model, request).outputs[0].path
        assert sha256(convert(scaled, method=Method.NONE)) == original


def test_reconversion_is_relative_to_the_original(tiny_model: Path) -> None:
    x4 = convert(tiny_model, factor=4.0)
    plan = plan_conversion(open_model(x4), ConvertRequest(factor=2.0))
    assert plan.replaced == f"yarn x4 (original context {CONTEXT})"
    x2 = convert(x4, factor=2.0, output=tiny_model.parent / "x2.gguf")
    f = fields(x2)
    assert f["llama.rope.scaling.factor"][1] == 2.0
    assert f["llama.context_length"][1] == 2 * CONTEXT
    assert f["llama.rope.scaling.original_context_length"][1] == CONTEXT
    # the record is the one from before the first conversion, so undo still restores the original
    assert sha256(convert(x2, method=Method.NONE)) == sha256(tiny_model)


def test_ntk_after_ntk_does_not_compound_the_base(tiny_model: Path) -> None:
    first = convert(tiny_model, method=Method.NTK, factor=2.0)
    second = convert(first, method=Method.NTK, factor=2.0, output=tiny_model.parent / "again.gguf")
    assert fields(second)["llama.rope.freq_base"] == fields(first)["llama.rope.freq_base"]
    plan = plan_conversion(open_model(first), ConvertRequest(method=Method.YARN, factor=2.0))
    assert plan.replaced is not None and plan.replaced.startswith("ntk")
    assert plan.freq_base == FREQ_BASE  # YaRN starts from the original base, not the NTK one


def test_none_on_a_file_never_scaled_is_refused(tiny_model: Path) -> None:
    with pytest.raises(InputError, match="nothing to undo"):
        convert(tiny_model, method=Method.NONE)


def test_none_removes_a_published_yarn_scaling_and_can_restore_it(tmp_path: Path) -> None:
    published = write_tiny_llama(
        tmp_path / "vendor.gguf",
        context_length=1024,
        extra={
            "llama.rope.scaling.type": ("yarn", GGUFValueType.STRING),
            "llama.rope.scaling.factor": (4.0, GGUFValueType.FLOAT32),
            "llama.rope.scaling.original_context_length": (256, GGUFValueType.UINT32),
        },
    )
    native = convert(published, method=Method.NONE)
    f = fields(native)
    assert f["llama.context_length"][1] == 256
    assert "llama.rope.scaling.type" not in f
    again = convert(native, method=Method.NONE, output=tmp_path / "back.gguf")
    assert sha256(again) == sha256(published)


def test_trained_linear_factor_refused_without_force(tmp_path: Path) -> None:
    gemma_like = write_tiny_llama(
        tmp_path / "g.gguf",
        extra={
            "llama.rope.scaling.type": ("linear", GGUFValueType.STRING),
            "llama.rope.scaling.factor": (8.0, GGUFValueType.FLOAT32),
        },
    )
    with pytest.raises(UnsupportedModelError, match=r"trained with linear RoPE scaling x8.*--force"):
        plan_conversion(open_model(gemma_like), ConvertRequest(factor=2.0))
    plan = plan_conversion(open_model(gemma_like), ConvertRequest(factor=2.0, force=True))
    assert plan.replaced == "linear x8"


def test_longrope_refused_without_force(tmp_path: Path) -> None:
    phi_like = write_tiny_llama(
        tmp_path / "p.gguf", extra={"llama.rope.scaling.type": ("longrope", GGUFValueType.STRING)}
    )
    with pytest.raises(UnsupportedModelError, match="longrope"):
        plan_conversion(open_model(phi_like), ConvertRequest(factor=2.0))


@pytest.mark.parametrize("arch", ["bloom", "mpt", "t5", "mamba", "rwkv6"])
def test_architectures_without_rope_are_refused(tmp_path: Path, arch: str) -> None:
    path = write_tiny_llama(tmp_path / f"{arch}.gguf", arch=arch)
    with pytest.raises(UnsupportedModelError, match="not RoPE: there is nothing to scale"):
        plan_conversion(open_model(path), ConvertRequest(factor=2.0))


def test_missing_context_length_needs_original_context(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "noctx.gguf", context_length=None)
    with pytest.raises(UnsupportedModelError, match="--original-context"):
        plan_conversion(open_model(path), ConvertRequest(factor=2.0))
    plan = plan_conversion(open_model(path), ConvertRequest(factor=2.0, original_context=512))
    assert plan.context_length == 1024


def test_missing_freq_base_uses_llama_cpp_default(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "nobase.gguf", freq_base=None)
    plan = plan_conversion(open_model(path), ConvertRequest(method=Method.NTK, factor=2.0))
    assert plan.freq_base == pytest.approx(10000.0 * 2.0 ** (HEAD_DIM / (HEAD_DIM - 2)), rel=1e-6)


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"factor": 1.0}, "above 1"),
        ({"factor": 0.5}, "above 1"),
        ({"factor": -2.0}, "above 1"),
        ({"factor": float("nan")}, "above 1"),
        ({"factor": float("inf")}, "above 1"),
        ({"context": CONTEXT}, "not above the original context"),
        ({"context": 100}, "not above the original context"),
        ({"factor": 2.0, "context": 1024}, "not both"),
        ({}, "--factor S or the target context"),
        ({"method": Method.LINEAR, "factor": 2.0, "attn_factor": 1.2}, "--attn-factor applies only to --method yarn"),
        (
            {"method": Method.NTK, "factor": 2.0, "beta_fast": 8.0},
            "--beta-fast applies only to --method yarn and ntk-by-parts",
        ),
        (
            {"method": Method.NTK_BY_PARTS, "factor": 2.0, "attn_factor": 1.2},
            "--method ntk-by-parts sets rope.scaling.attn_factor itself",
        ),
        ({"factor": 2.0, "attn_factor": 0.0}, "--attn-factor must be a positive"),
        ({"factor": 2.0, "beta_fast": float("nan")}, "--beta-fast must be a positive"),
        ({"method": Method.NONE, "factor": 2.0}, "takes no --factor"),
        ({"factor": 1e39}, "is more than a GGUF file can state"),
        ({"factor": 1.00000001}, "--factor 1.00000001 is 1 once stored as a GGUF float32"),
        ({"factor": 1.001}, "--factor 1.001 leaves context_length at 256"),
        ({"context": 30_000_001, "original_context": 30_000_000}, "--context 30,000,001 is so close to the original"),
        ({"factor": 2.0, "attn_factor": 1e39}, "--attn-factor 1e\\+39 is more than a GGUF float32 can hold"),
        ({"factor": 2.0, "beta_slow": 1e-50}, "--beta-slow 1e-50 is 0 once stored as a GGUF float32"),
    ],
)
def test_bad_requests(tiny_model: Path, request_kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        plan_conversion(open_model(tiny_model), ConvertRequest(**request_kwargs))


def test_an_ntk_base_beyond_float32_is_refused(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "big-base.gguf", freq_base=1e33)
    with pytest.raises(InputError, match=r"^NTK-aware x1e\+06 would raise llama.rope.freq_base beyond what a GGUF"):
        plan_conversion(open_model(model), ConvertRequest(method=Method.NTK, factor=1e6))


# --- output handling -------------------------------------------------------------------------


def test_existing_output_refused_without_force(tiny_model: Path) -> None:
    out = convert(tiny_model, factor=2.0)
    stamp = out.stat().st_mtime_ns
    with pytest.raises(OutputError, match="already exists; use --force"):
        convert(tiny_model, factor=2.0)
    assert out.stat().st_mtime_ns == stamp
    convert(tiny_model, factor=2.0, overwrite=True)


def test_output_equal_to_input_refused(tiny_model: Path) -> None:
    with pytest.raises(OutputError, match="is the input file; use --in-place"):
        convert(tiny_model, factor=2.0, output=tiny_model, overwrite=True)


def test_output_directory_missing(tiny_model: Path) -> None:
    with pytest.raises(OutputError, match="does not exist; create it first"):
        convert(tiny_model, factor=2.0, output=tiny_model.parent / "nope" / "x.gguf")


def test_dry_run_writes_nothing(tiny_model: Path) -> None:
    result = convert_file(tiny_model, ConvertRequest(factor=4.0), dry_run=True)
    assert result.outputs == []
    assert [c.key for c in result.plan.changes][:4] == [
        "llama.context_length",
        "llama.rope.scaling.type",
        "llama.rope.scaling.factor",
        "llama.rope.scaling.original_context_length",
    ]
    assert sorted(p.name for p in tiny_model.parent.iterdir()) == ["tiny.gguf"]


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    big = write_tiny_llama(tmp_path / "big.gguf", pad_mib=192)
    before = sha256(big)
    interrupt = interrupt_on_call(2)  # after the header and the first block of tensor data
    with pytest.raises(KeyboardInterrupt):
        convert_file(big, ConvertRequest(factor=2.0), progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.gguf"]
    assert sha256(big) == before


def test_output_keeps_input_permissions(tiny_model: Path) -> None:
    os.chmod(tiny_model, 0o640)
    out = convert(tiny_model, factor=2.0)
    assert out.stat().st_mode & 0o777 == 0o640


def test_big_endian_file_converts_and_undoes(tmp_path: Path) -> None:
    from gguf import GGUFEndian

    big_endian = write_tiny_llama(tmp_path / "be.gguf", endianess=GGUFEndian.BIG)
    out = convert(big_endian, factor=4.0)
    header = read_header(out)
    assert header.endianness == "big"
    assert header.get("llama.context_length") == 4 * CONTEXT
    assert header.get("llama.rope.scaling.factor") == 4.0
    assert sha256(convert(out, method=Method.NONE)) == sha256(big_endian)


@pytest.mark.slow
def test_tensor_data_keeps_its_offset_within_a_page(tiny_model: Path, smollm2: Path, tmp_path: Path) -> None:
    """The undo record is padded so the data moves by whole 4 KiB pages (fast in-kernel copies)."""
    for source in (tiny_model, smollm2):
        before = read_header(source).data_offset
        once = convert(source, factor=4.0, output=tmp_path / "once.gguf", overwrite=True)
        twice = convert(once, method=Method.NTK, factor=2.0, output=tmp_path / "twice.gguf", overwrite=True)
        for path in (once, twice):
            assert (read_header(path).data_offset - before) % 4096 == 0
        assert json.loads(fields(twice)[RECORD_KEY][1])["llama.context_length"]["value"] > 0  # type: ignore[arg-type]
        assert sha256(convert(twice, method=Method.NONE, output=tmp_path / "back.gguf", overwrite=True)) == sha256(
            source
        )
