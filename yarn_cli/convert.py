"""Planning and writing a RoPE-scaling change to a GGUF file.

A conversion never compounds: the state the file had before yarn-cli first
touched it is recorded as JSON under ``yarn_cli.original``, every later
conversion starts from that state, and ``--method none`` restores it exactly
(the header, and so the whole file, becomes byte-identical to the original).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from yarn_cli import __version__
from yarn_cli.errors import InputError, OutputError, UnsupportedModelError, VerificationError
from yarn_cli.fileops import (
    Unsupported,
    atomic_output,
    block_size,
    check_free_space,
    clone_range,
    copy_range,
    link_or_copy,
    write_all,
)
from yarn_cli.gguf_file import GGUFHeader, Value, build_header, edited_keys, read_header, unpadded_header
from yarn_cli.inplace import recover, rewrite_header
from yarn_cli.model_info import BETA_ARCHS, SWA_ARCHS, ModelInfo, model_info
from yarn_cli.rope import ntk_freq_base
from yarn_cli.scaling import (
    DEFAULT_FREQ_BASE,
    FileScaling,
    Method,
    RuntimeScaling,
    boolean,
    check_factor,
    float32,
    runtime_linear,
    runtime_ntk,
    runtime_yarn,
    scaling_from,
    string,
    uint32,
)
from yarn_cli.splits import parse_split_name, split_name, split_paths, split_prefix_for

RECORD_KEY = "yarn_cli.original"
PAGE = 4096
VERSION_KEY = "yarn_cli.version"

Values = dict[str, Value | None]


@dataclass(frozen=True)
class ConvertRequest:
    """What the user asked for; exactly one of ``factor`` and ``context`` for scaling methods."""

    method: Method = Method.YARN
    factor: float | None = None
    context: int | None = None
    original_context: int | None = None
    attn_factor: float | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    finetuned: bool | None = None
    force: bool = False


@dataclass(frozen=True)
class KeyChange:
    key: str
    before: Value | None
    after: Value | None


@dataclass(frozen=True)
class ConversionPlan:
    """The metadata edits a conversion makes, and what they mean."""

    info: ModelInfo
    method: Method
    factor: float | None
    original_context: int
    context_length: int
    freq_base: float
    edits: dict[str, Value | None]
    changes: list[KeyChange]
    replaced: str | None
    warnings: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> RuntimeScaling | None:
        """The llama.cpp load parameters that reproduce this conversion on the unconverted file."""
        if self.method == Method.YARN and self.factor:
            return runtime_yarn(self.factor, self.original_context)
        if self.method == Method.LINEAR and self.factor:
            return runtime_linear(self.factor)
        if self.method == Method.NTK:
            return runtime_ntk(self.freq_base)
        return None


def read_record(header: GGUFHeader) -> Values | None:
    raw = header.get(RECORD_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return {k: None if v is None else Value.from_json(v) for k, v in data.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsupportedModelError(
            f"{header.path}: the {RECORD_KEY} key is damaged ({exc}); yarn-cli cannot tell what the "
            "file had before it was converted"
        ) from exc


def _record_json(values: Values) -> str:
    return json.dumps({k: None if v is None else v.to_json() for k, v in values.items()}, sort_keys=False)


def _check_convertible(info: ModelInfo, original_scaling_type: str, factor: float, force: bool) -> None:
    if not info.uses_rope:
        raise UnsupportedModelError(
            f"{info.architecture} models use {info.no_rope_reason}, not RoPE: there is nothing to scale"
        )
    if force:
        return
    if original_scaling_type == "longrope":
        raise UnsupportedModelError(
            "the model uses longrope scaling (per-dimension factors it was trained with); replacing it "
            "would discard them. Use --force to replace it anyway"
        )
    if original_scaling_type == "linear" and factor != 1.0:
        raise UnsupportedModelError(
            f"the model was trained with linear RoPE scaling x{factor:g} (as Gemma 3 is); a new scaling "
            "would replace that trained factor. Use --force to replace it anyway"
        )


def _target_factor(request: ConvertRequest, original_context: int) -> tuple[float, int]:
    if request.factor is not None and request.context is not None:
        raise InputError("give either --factor or --context, not both")
    if request.context is not None:
        if request.context <= original_context:
            raise InputError(
                f"--context {request.context} is not above the original context {original_context}; "
                "the target context must be larger"
            )
        return request.context / original_context, request.context
    if request.factor is None:
        raise InputError("give the scale with --factor S or the target context with --context N")
    factor = check_factor(request.factor)
    return factor, round(factor * original_context)


def _describe_current(info: ModelInfo, record: Values | None) -> str | None:
    """How the file is scaled now, for "replaced ..." messages."""
    if info.scaling.is_scaled:
        return info.scaling.describe()
    if record is not None:
        base = record.get(info.keys.freq_base)
        before = float(base.value) if base is not None else DEFAULT_FREQ_BASE
        if info.freq_base != before:
            return f"ntk (freq_base {before:g} -> {info.freq_base:g})"
    return None


def plan_conversion(header: GGUFHeader, request: ConvertRequest) -> ConversionPlan:
    """Decide every key to write. Pure: reads nothing but ``header``, writes nothing."""
    info = model_info(header)
    keys = info.keys
    record = read_record(header)
    current: Values = {k: header.scalar(k) for k in keys.tracked}
    original: Values = dict(record) if record is not None else dict(current)
    for k in keys.tracked:
        original.setdefault(k, None)
    orig_scaling = scaling_from(original, keys)
    warnings: list[str] = []
    replaced = _describe_current(info, record)

    yarn_only = {
        "--attn-factor": request.attn_factor,
        "--beta-fast": request.beta_fast,
        "--beta-slow": request.beta_slow,
        "--finetuned": request.finetuned,
    }
    used = [name for name, value in yarn_only.items() if value is not None]
    if used and request.method != Method.YARN:
        raise InputError(f"{', '.join(used)} only apply to --method yarn")

    if request.method == Method.NONE:
        if request.factor is not None or request.context is not None:
            raise InputError("--method none takes no --factor or --context: it restores the original")
        target = _plan_none(info, record, original, orig_scaling, request.force)
        factor = None
        ctx_value = target.get(keys.context_length)
        context_length = int(ctx_value.value) if ctx_value is not None else 0
        base_value = target.get(keys.freq_base)
        freq_base = float(base_value.value) if base_value is not None else DEFAULT_FREQ_BASE
        orig_ctx = context_length
    else:
        _check_convertible(info, orig_scaling.type, orig_scaling.factor, request.force)
        orig_ctx_value = original.get(keys.context_length)
        orig_ctx = (
            request.original_context
            or orig_scaling.original_context
            or (int(orig_ctx_value.value) if orig_ctx_value is not None else 0)
        )
        if not orig_ctx or orig_ctx <= 0:
            raise UnsupportedModelError(
                f"the file has no {keys.context_length}; give the trained context with --original-context L"
            )
        factor, context_length = _target_factor(request, orig_ctx)
        base_value = original.get(keys.freq_base)
        base = float(base_value.value) if base_value is not None else DEFAULT_FREQ_BASE
        target = _plan_scaled(info, original, request, factor, orig_ctx, context_length, base)
        freq_value = target.get(keys.freq_base)
        freq_base = float(freq_value.value) if freq_value is not None else DEFAULT_FREQ_BASE
        warnings += _option_warnings(info, request)

    edits: dict[str, Value | None] = {k: target.get(k) for k in keys.tracked if target.get(k) != current[k]}
    if request.method == Method.NONE and record is not None:
        edits[RECORD_KEY] = None
        edits[VERSION_KEY] = None
    elif record is None:
        edits[RECORD_KEY] = string(_record_json({k: original[k] for k in keys.tracked}))
        edits[VERSION_KEY] = string(__version__)
    edits = _keep_page_offset(header, edits)
    changes = [KeyChange(k, header.scalar(k), v) for k, v in edits.items()]
    return ConversionPlan(
        info=info,
        method=request.method,
        factor=factor,
        original_context=orig_ctx,
        context_length=context_length,
        freq_base=freq_base,
        edits=edits,
        changes=changes,
        replaced=replaced,
        warnings=warnings,
    )


def _keep_page_offset(header: GGUFHeader, edits: dict[str, Value | None]) -> dict[str, Value | None]:
    """Pad the undo record with spaces so the tensor data keeps its offset within a 4 KiB page.

    The kernel then copies whole pages (copy_file_range between differently aligned offsets
    measured about 20% slower), and the data moves by whole pages, as block-level tricks need.
    An undo, which removes the record, brings the original layout back by itself.
    """
    if edits.get(RECORD_KEY, header.scalar(RECORD_KEY)) is None or PAGE % header.alignment:
        return edits
    current = edits.get(RECORD_KEY) or header.scalar(RECORD_KEY)
    assert current is not None
    padded = dict(edits)
    padded[RECORD_KEY] = string(str(current.value).rstrip(" "))
    shortfall = (header.data_offset - len(unpadded_header(header, padded))) % PAGE
    padded[RECORD_KEY] = string(str(padded[RECORD_KEY].value) + " " * shortfall)  # type: ignore[union-attr]
    if padded[RECORD_KEY] == header.scalar(RECORD_KEY):
        del padded[RECORD_KEY]  # already laid out this way: no need to rewrite it
    return padded


def _plan_none(
    info: ModelInfo, record: Values | None, original: Values, orig_scaling: FileScaling, force: bool
) -> Values:
    keys = info.keys
    if record is not None:
        return dict(original)
    if not info.scaling.is_scaled:
        raise InputError(f"{info.header.path} carries no RoPE scaling and no yarn-cli record: there is nothing to undo")
    _check_convertible(info, orig_scaling.type, orig_scaling.factor, force)
    # The file's own scaling, removed: back to the trained context; recorded, so it can be restored.
    target = dict(original)
    for k in keys.scaling:
        target[k] = None
    native = info.scaling.original_context
    if native:
        target[keys.context_length] = _same_type(original.get(keys.context_length), uint32(native))
    return target


def _same_type(old: Value | None, new: Value) -> Value:
    """``new``'s value in the type the file already used for the key, so llama.cpp's type check still passes."""
    return new if old is None else Value(old.type, new.value)


def _plan_scaled(
    info: ModelInfo,
    original: Values,
    request: ConvertRequest,
    factor: float,
    orig_ctx: int,
    context_length: int,
    base: float,
) -> Values:
    keys = info.keys
    target = dict(original)
    for k in keys.scaling:
        target[k] = None
    target[keys.context_length] = _same_type(original.get(keys.context_length), uint32(context_length))
    if request.method == Method.YARN:
        target[keys.scaling_type] = string("yarn")
        target[keys.scaling_factor] = float32(factor)
        target[keys.original_context] = uint32(orig_ctx)
        if request.attn_factor is not None:
            if not math.isfinite(request.attn_factor) or request.attn_factor <= 0:
                raise InputError(f"--attn-factor must be a positive number, got {request.attn_factor:g}")
            target[keys.attn_factor] = float32(request.attn_factor)
        if request.finetuned is not None:
            target[keys.finetuned] = boolean(request.finetuned)
        for key, beta, name in (
            (keys.beta_fast, request.beta_fast, "--beta-fast"),
            (keys.beta_slow, request.beta_slow, "--beta-slow"),
        ):
            if beta is not None:
                if not math.isfinite(beta) or beta <= 0:
                    raise InputError(f"{name} must be a positive number, got {beta:g}")
                target[key] = float32(beta)
    elif request.method == Method.LINEAR:
        target[keys.scaling_type] = string("linear")
        target[keys.scaling_factor] = float32(factor)
    elif request.method == Method.NTK:
        if not info.rope_dims or info.rope_dims <= 2:
            raise UnsupportedModelError("the rotary dimension count is unknown; NTK scaling needs it")
        new_base = float32(ntk_freq_base(base, factor, info.rope_dims))
        target[keys.freq_base] = _same_type(original.get(keys.freq_base), new_base)
    return target


def _option_warnings(info: ModelInfo, request: ConvertRequest) -> list[str]:
    warnings = []
    arch = info.architecture
    if (request.beta_fast is not None or request.beta_slow is not None) and arch not in BETA_ARCHS:
        warnings.append(
            f"llama.cpp ignores yarn_beta_fast/yarn_beta_slow for {arch} (it reads them only for "
            f"{', '.join(sorted(BETA_ARCHS))}); pass --yarn-beta-fast/--yarn-beta-slow at run time instead"
        )
    if request.finetuned is not None:
        warnings.append("rope.scaling.finetuned is informational: llama.cpp computes the same either way")
    if arch in SWA_ARCHS and request.method != Method.NONE:
        warnings.append(
            f"{arch} uses sliding-window layers: llama.cpp applies the scaling to its global-attention layers only"
        )
    return warnings


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    # The first file: "insert-range", "collapse-range" or "overwrite" (in place, only the header
    # written), "reflink" (data blocks shared with the input) or "copy"; later splits:
    # "hardlink" or "copy".
    action: str
    bytes_copied: int


@dataclass(frozen=True)
class ConvertResult:
    plan: ConversionPlan
    input: Path
    outputs: list[WrittenFile]
    in_place: bool
    seconds: float
    verified: bool
    recovered: str | None = None  # what an interrupted earlier in-place change became
    fallback: str | None = None  # why an in-place change went through a copy


Progress = Callable[[int], None]


def method_suffix(method: Method, factor: float | None) -> str:
    if method == Method.NONE or factor is None:
        return "orig"
    return f"{method.value}-{factor:g}x"


def _strip_suffix(stem: str) -> str:
    """Drop an earlier conversion's suffix, so model.yarn-4x.gguf undone is model.orig.gguf."""
    return re.sub(r"\.(?:(?:yarn|linear|ntk)-[0-9.e+]+x|orig)$", "", stem)


def output_paths(
    header: GGUFHeader, plan: ConversionPlan, output: Path | None, output_dir: Path | None = None
) -> tuple[list[Path], list[Path]]:
    """(input paths, output paths), one per split; default outputs go beside the input or in ``output_dir``."""
    info = plan.info
    path = header.path
    suffix = method_suffix(plan.method, plan.factor)
    directory = output_dir if output_dir is not None else path.parent
    if info.split is None:
        if output is None:
            stem = path.name[: -len(".gguf")] if path.name.endswith(".gguf") else path.name
            output = directory / f"{_strip_suffix(stem)}.{suffix}.gguf"
        return [path], [output]
    parsed = parse_split_name(path)
    if info.split.number != 1 or parsed is None or parsed[1] != 1:
        raise InputError(
            f"{path} is split {info.split.number} of {info.split.count}; pass the first split "
            f"(its name ends in -00001-of-{info.split.count:05d}.gguf)"
        )
    prefix, _, count = parsed
    inputs = split_paths(path.parent, prefix, count)
    for p in inputs[1:]:
        if not p.is_file():
            raise InputError(f"split {p.name} of {path.name} is missing; all {count} splits must sit together")
    if output is None:
        out_dir, out_prefix = directory, f"{_strip_suffix(prefix)}.{suffix}"
    else:
        out_dir, out_prefix = split_prefix_for(output, count)
    return inputs, [out_dir / split_name(out_prefix, i, count) for i in range(1, count + 1)]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(inputs: list[Path], outputs: list[Path], *, force: bool) -> None:
    for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
        if not dst.parent.is_dir():
            raise OutputError(f"the output folder {dst.parent} does not exist; create it first")
        # a later split may already be a hard link to its input, from an earlier conversion
        same = _same_file(src, dst) if i == 0 else src.resolve() == dst.resolve()
        if same:
            raise OutputError(f"the output {dst} is the input file; use --in-place to replace the input")
        if dst.exists() and not force:
            raise OutputError(f"{dst} already exists; use --force to overwrite it")


def verify_output(original: GGUFHeader, edits: dict[str, Value | None], written: Path) -> None:
    """Re-read the output: every key and tensor record as intended, the data section intact in size."""
    out = read_header(written)
    problems: list[str] = []
    expected_keys = edited_keys(original, edits)
    if list(out.fields) != expected_keys:
        problems.append("the key list differs")
    for key in expected_keys:
        got = out.fields.get(key)
        if got is None:
            continue
        want = edits.get(key)
        if want is not None:
            if got.scalar() != want:
                problems.append(f"{key} is {got.value!r}, expected {want.value!r}")
        elif got.raw != original.fields[key].raw:
            problems.append(f"{key} changed")
    if [t.raw for t in out.tensors] != [t.raw for t in original.tensors]:
        problems.append("the tensor records differ")
    if out.data_size != original.data_size:
        problems.append(f"the data section is {out.data_size:,} bytes, expected {original.data_size:,}")
    if (out.version, out.byteorder, out.alignment) != (original.version, original.byteorder, original.alignment):
        problems.append("the GGUF version, byte order or alignment changed")
    if problems:
        raise VerificationError(f"the new file did not verify ({'; '.join(problems)}); nothing was written")


def write_patched(
    header: GGUFHeader,
    edits: dict[str, Value | None],
    destination: Path,
    *,
    progress: Progress | None = None,
) -> tuple[str, int]:
    """Write ``header`` + ``edits`` and the unchanged tensor data to ``destination``, atomically.

    Returns how ("reflink" or "copy") and the bytes copied.

    The new file is verified before it replaces anything, so a file that does not
    read back as intended never appears under ``destination``.
    """
    new_header = build_header(header, edits)
    mode = header.path.stat().st_mode & 0o777
    with atomic_output(destination, mode=mode) as (fd, tmp), header.path.open("rb") as src:
        shared = _clone_data(src.fileno(), fd, header, len(new_header), destination.parent)
        write_all(fd, new_header, 0)  # over the cloned tail of the old header, when cloned
        if shared:
            if progress:
                progress(len(new_header) + header.data_size)
        else:
            if progress:
                progress(len(new_header))
            copy_range(src.fileno(), fd, header.data_offset, len(new_header), header.data_size, progress)
        verify_output(header, edits, tmp)
    return ("reflink", len(new_header)) if shared else ("copy", len(new_header) + header.data_size)


def _clone_data(src_fd: int, dst_fd: int, header: GGUFHeader, new_data_offset: int, directory: Path) -> bool:
    """Share the tensor data's blocks with the input (reflink) where the filesystem can; False elsewhere.

    Clones start at a block boundary, so the clone takes the old header's last partial
    block along; the new header is then written over it.
    """
    size = block_size(directory)
    shift = new_data_offset - header.data_offset
    base = header.data_offset // size * size
    if shift % size or base + shift < 0:
        return False
    try:
        clone_range(src_fd, dst_fd, base, base + shift)
    except Unsupported:
        return False
    return True


def _rewrite_in_place(
    header: GGUFHeader, plan: ConversionPlan, progress: Callable[[int, int], None] | None
) -> WrittenFile:
    """Only the header is written; the filesystem moves the data by whole blocks (Unsupported if it cannot)."""
    new_header = build_header(header, plan.edits)
    action = rewrite_header(
        header.path,
        header.data_offset,
        new_header,
        header.data_size,
        verify=lambda: verify_output(header, plan.edits, header.path),
    )
    if progress:
        progress(header.file_size, header.file_size)
    return WrittenFile(header.path, action, len(new_header))


def convert_file(
    path: str | os.PathLike[str],
    request: ConvertRequest,
    *,
    output: str | os.PathLike[str] | None = None,
    in_place: bool = False,
    overwrite: bool = False,
    output_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    dry_run: bool = False,
) -> ConvertResult:
    """Convert a GGUF model (all splits of it); ``progress(done, total)`` reports bytes."""
    start = time.perf_counter()
    recovered = recover(Path(path))  # an earlier in-place change cut short: finish or undo it first
    header = read_header(path)
    plan = plan_conversion(header, request)
    if in_place and output is not None:
        raise InputError("give an OUTPUT or --in-place, not both")
    if in_place:
        inputs, outputs = [header.path], [header.path]
    else:
        inputs, outputs = output_paths(header, plan, Path(output) if output is not None else None, output_dir)
        check_outputs(inputs, outputs, force=overwrite)
    if dry_run:
        return ConvertResult(plan, header.path, [], in_place, time.perf_counter() - start, False, recovered)
    fallback = None
    if in_place:
        try:
            done_in_place = _rewrite_in_place(header, plan, progress)
            seconds = time.perf_counter() - start
            return ConvertResult(plan, header.path, [done_in_place], True, seconds, True, recovered)
        except Unsupported as exc:
            fallback = f"the data cannot be moved in place here ({exc.strerror}); the file was rewritten through a copy"

    total = header.file_size + sum(p.stat().st_size for p in inputs[1:])
    same_device = all(p.parent.stat().st_dev == inputs[0].parent.stat().st_dev for p in outputs)
    needed = header.file_size if same_device else total
    check_free_space(outputs[0].parent, needed)

    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    written: list[WrittenFile] = []
    action, copied = write_patched(header, plan.edits, outputs[0], progress=advance)
    written.append(WrittenFile(outputs[0], action, copied))
    for src, dst in zip(inputs[1:], outputs[1:], strict=True):
        split_size = src.stat().st_size
        action = link_or_copy(src, dst, advance)
        if action == "hardlink":
            advance(split_size)
        written.append(WrittenFile(dst, action, split_size if action == "copy" else 0))
    seconds = time.perf_counter() - start
    return ConvertResult(plan, header.path, written, in_place, seconds, True, recovered, fallback)
