"""Loading a GGUF model in llama.cpp (through llama-cpp-python) with a RoPE scaling.

llama-cpp-python swallows unknown keyword arguments and prints a lot; this module
passes only parameters it knows, keeps llama.cpp's log (shown with ``verbose``),
and reads back from that log what llama.cpp really set up, so the user sees the
effective context and scaling rather than an echo of the flags.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp

from yarn_cli.errors import InputError, ModelLoadError, UnsupportedModelError
from yarn_cli.llama import NUMPY_LOADED_FIRST
from yarn_cli.llama.devices import resolve_gpu_layers
from yarn_cli.llama.memory import choose_context
from yarn_cli.llama.threads import default_threads
from yarn_cli.model import Model
from yarn_cli.rope.scaling import SCALING_NAMES, RuntimeScaling

# ggml's GGML_MAX_N_THREADS: llama.cpp keeps per-thread state in arrays of this size (65,536 threads crashed)
MAX_THREADS = 512


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int | None = None  # None: the model's context_length, capped by memory
    scaling: RuntimeScaling | None = None
    n_gpu_layers: int | None = None  # None: all layers when llama.cpp can offload, else 0
    n_threads: int | None = None
    n_batch: int | None = None  # None: llama.cpp's 512
    flash_attn: bool = False
    seed: int | None = None
    verbose: bool = False
    memory_checked: bool = False  # the caller checked that n_ctx fits (an evaluation, once for its longest)


@dataclass(frozen=True)
class Effective:
    """What llama.cpp set up, read from its own log and model accessors.

    ``n_ctx_train`` is llama.cpp's figure: the file's ``context_length`` as loaded, which a conversion
    and yarn-cli's run-time YaRN (``--yarn auto``, ``--yarn dynamic``) raise with the scale.
    ``trained_context`` is the context the model was trained with, before any scaling (YaRN's original
    context), as ``inspect`` shows it.
    """

    n_ctx: int
    n_ctx_train: int
    trained_context: int
    scaling_type: str
    freq_scale: float
    original_context: int
    freq_base: float
    backend: str
    gpu_layers: int
    n_layers: int
    flash_attn: bool
    notes: tuple[str, ...] = field(default=())

    @property
    def factor(self) -> float:
        """The RoPE scale factor, 1 / freq_scale, to the 6 significant digits llama.cpp's log gives freq_scale in."""
        return float(f"{1.0 / self.freq_scale:.6g}") if self.freq_scale else 1.0

    def describe(self) -> str:
        if self.scaling_type == "yarn":
            rope = f"yarn x{self.factor:g} (original {self.original_context})"
        elif self.scaling_type == "linear" and self.freq_scale != 1.0:
            rope = f"linear x{self.factor:g}"
        else:
            rope = "none"
        return (
            f"n_ctx {self.n_ctx} (trained {self.trained_context}), rope {rope}, freq_base {self.freq_base:g}, "
            f"{self.backend} ({self.gpu_layers}/{self.n_layers} layers on GPU), "
            f"flash-attn {'on' if self.flash_attn else 'off'}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "n_ctx": self.n_ctx,
            "n_ctx_train": self.n_ctx_train,
            "trained_context": self.trained_context,
            "rope_scaling": self.scaling_type,
            "rope_scale": self.factor,
            "yarn_orig_ctx": self.original_context,
            "rope_freq_base": self.freq_base,
            "backend": self.backend,
            "gpu_layers": self.gpu_layers,
            "n_layers": self.n_layers,
            "flash_attn": self.flash_attn,
        }


# llama.cpp's log goes through one process-wide callback; it keeps the lines of the load in
# progress, and after that only echoes them when --verbose asked for them. The echo writes to a
# copy of stderr taken before the load: llama-cpp-python points fd 2 at /dev/null while it loads.
_log_lock = threading.Lock()
_log_lines: list[str] = []
_log_capture = False
_log_echo_fd: int | None = None


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if _log_capture:
        _log_lines.append(text.decode("utf-8", "replace"))
    if _log_echo_fd is not None:
        with contextlib.suppress(OSError):
            os.write(_log_echo_fd, text)


llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


@atexit.register
def _log_to_stderr_at_exit() -> None:
    """Hand llama.cpp's log back to its own stderr logger before the interpreter goes away.

    Whatever llama.cpp logs while its libraries are unloaded (a GPU backend freeing its devices)
    would otherwise call into a Python that no longer exists.
    """
    global _log_echo_fd
    llama_cpp.llama_log_set(llama_cpp.llama_log_callback(), ctypes.c_void_p(0))  # NULL: its own logger
    if _log_echo_fd is not None:
        with contextlib.suppress(OSError):
            os.close(_log_echo_fd)
        _log_echo_fd = None


@contextlib.contextmanager
def captured_log(echo: bool) -> Iterator[list[str]]:
    """Collect llama.cpp's log while loading; ``echo`` prints it too, then and afterwards."""
    global _log_capture, _log_echo_fd
    with _log_lock:
        _log_lines.clear()
        _log_capture = True
        if _log_echo_fd is not None:  # a copy of the stderr of now, not of an earlier load
            os.close(_log_echo_fd)
            _log_echo_fd = None
        if echo:
            _log_echo_fd = os.dup(2)
        try:
            yield _log_lines
        finally:
            _log_capture = False


def _log_value(lines: list[str], prefix: str, name: str) -> str | None:
    """The last ``prefix: name = value`` of the log's ``lines`` (whole lines, not llama.cpp's fragments)."""
    pattern = re.compile(rf"^{re.escape(prefix)}:\s+{re.escape(name)}\s+=\s+(.+?)\s*$")
    for line in reversed(lines):
        match = pattern.match(line)
        if match:
            return match.group(1)
    return None


def _backend(lines: list[str]) -> str:
    # llama.cpp names each model buffer after its device: "CUDA0 model buffer size = ...",
    # "MTL0_Mapped model buffer size = ...", "Vulkan0 model buffer size = ..."; only those lines are
    # searched (the whole log of a load is thousands of lines: 22 ms for SmolLM2)
    text = "\n".join(line for line in "".join(lines).splitlines() if "model buffer" in line)
    for name, pattern in (
        ("CUDA", r"\bCUDA\d+(?:_\w+)? model buffer"),
        ("Metal", r"\b(?:MTL\d*|Metal)(?:_\w+)? model buffer"),
        ("Vulkan", r"\bVulkan\d+(?:_\w+)? model buffer"),
        ("SYCL", r"\bSYCL\d+(?:_\w+)? model buffer"),
    ):
        if re.search(pattern, text):
            return name
    return "CPU"


def load_model(model: Model, options: LoadOptions) -> tuple[llama_cpp.Llama, Effective]:
    """Load an opened model with ``options``; every failure becomes one clear YarnCliError."""
    n_gpu_layers = resolve_gpu_layers(options.n_gpu_layers)
    n_ctx, note = choose_context(model, options.n_ctx, n_gpu_layers, checked=options.memory_checked)
    if options.scaling is not None and options.scaling.scales and not model.rope.uses_rope:
        raise UnsupportedModelError(
            f"{model.architecture} models use {model.rope.no_rope_reason}, not RoPE: a RoPE scaling has no effect"
        )
    if NUMPY_LOADED_FIRST and llama_cpp.llama_supports_gpu_offload():
        warnings.warn(
            "numpy was imported before llama.cpp; on CUDA builds model loads have crashed that way: "
            "import yarn_cli.llama before numpy",
            RuntimeWarning,
            stacklevel=2,
        )
    path = model.path
    kwargs: dict[str, object] = {
        "model_path": str(path),
        "n_ctx": n_ctx,
        "n_gpu_layers": n_gpu_layers,
        "flash_attn": options.flash_attn,
        "verbose": False,
        # -1: the model's own values, as llama.cpp's tools pass them. llama-cpp-python's defaults
        # (1, 32, 1) would override the betas and attention factor some files carry (mistral3, grok).
        "yarn_attn_factor": -1.0,
        "yarn_beta_fast": -1.0,
        "yarn_beta_slow": -1.0,
        # Sliding-window layers keep a cache for the whole context, as llama-cpp-python does by default:
        # the windowed cache (llama-server's default) changed Gemma 3 270M's logits by up to 0.85 once a
        # 2000-token prompt went past the window in 512-token batches.
        "swa_full": True,
    }
    if options.n_threads is not None:
        if not 1 <= options.n_threads <= MAX_THREADS:
            raise InputError(
                f"-t/--threads must be between 1 and {MAX_THREADS} (llama.cpp's limit), got {options.n_threads}"
            )
        kwargs["n_threads"] = options.n_threads
        kwargs["n_threads_batch"] = options.n_threads
    else:
        kwargs["n_threads"], kwargs["n_threads_batch"] = default_threads()
    if options.n_batch is not None:
        if options.n_batch <= 0:
            raise InputError(f"-b/--batch-size must be at least 1, got {options.n_batch}")
        kwargs["n_batch"] = options.n_batch
    if options.seed is not None:
        kwargs["seed"] = options.seed
    if options.scaling is not None:
        kwargs.update(options.scaling.as_kwargs())
    with captured_log(options.verbose) as lines:
        try:
            llm = llama_cpp.Llama(**kwargs)  # type: ignore[arg-type]
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(load_error(path, lines, exc)) from exc
        log = list(lines)
    effective = _effective(llm, model, options, log, note)
    return llm, effective


def load_error(path: Path, lines: list[str], exc: Exception) -> str:
    reasons = [
        line.split(":", 1)[-1].strip()
        for line in "".join(lines).splitlines()
        if "error" in line.lower() or "failed" in line.lower()
    ]
    detail = reasons[0] if reasons else str(exc)
    return f"llama.cpp could not load {path}: {detail}"


def _effective(llm: llama_cpp.Llama, model: Model, options: LoadOptions, fragments: list[str],
               note: str | None) -> Effective:  # fmt: skip
    loaded = llm.model
    log = "".join(fragments).splitlines()
    # Counted as llama.cpp counts them: the repeating layers and the output layer ("offloaded 31/31"
    # for SmolLM2's 30 blocks); a CPU-only build prints no such line.
    gpu_layers, n_layers = 0, llama_cpp.llama_model_n_layer(loaded) + 1
    offloaded = re.search(
        r"offloaded (\d+)/(\d+) layers to GPU", "\n".join(line for line in log if "offloaded" in line)
    )
    if offloaded:
        gpu_layers, n_layers = int(offloaded.group(1)), int(offloaded.group(2))
    freq_base = _log_value(log, "llama_context", "freq_base")
    freq_scale = _log_value(log, "llama_context", "freq_scale")
    flash = _log_value(log, "llama_context", "flash_attn")
    train_type = _log_value(log, "print_info", "rope scaling") or "none"
    orig_yarn = _log_value(log, "print_info", "n_ctx_orig_yarn")
    scaling = options.scaling
    scaling_type = train_type
    original = int(orig_yarn) if orig_yarn else model.original_context or 0
    if scaling is not None:
        if scaling.rope_scaling_type in SCALING_NAMES:
            scaling_type = SCALING_NAMES[scaling.rope_scaling_type]
        if scaling.yarn_orig_ctx:
            original = scaling.yarn_orig_ctx
    scale = float(freq_scale) if freq_scale else llama_cpp.llama_model_rope_freq_scale_train(loaded)
    if scaling_type == "linear" and scale == 1.0:
        scaling_type = "none"
    # The model's own figure as llama.cpp loaded it; llama_model_n_ctx_train() reports it rescaled
    # once a context with a run-time freq_scale exists.
    logged_train = _log_value(log, "print_info", "n_ctx_train")
    n_ctx_train = int(logged_train) if logged_train else llama_cpp.llama_model_n_ctx_train(loaded)
    return Effective(
        n_ctx=llama_cpp.llama_n_ctx(llm.ctx),
        n_ctx_train=n_ctx_train,
        trained_context=model.original_context or n_ctx_train,
        scaling_type=scaling_type,
        freq_scale=scale,
        original_context=original,
        freq_base=float(freq_base) if freq_base else model.rope.current.freq_base,
        backend=_backend(fragments),
        gpu_layers=gpu_layers,
        n_layers=n_layers,
        flash_attn=flash not in (None, "disabled", "0", "false"),
        notes=(note,) if note else (),
    )
