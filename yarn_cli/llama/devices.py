"""The devices llama.cpp can run on, and their free memory, as ggml reports them.

llama-cpp-python does not wrap ggml's device API, but its library handle resolves the symbols
of the ggml libraries it links, so they are declared here once with ctypes.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import llama_cpp

# enum ggml_backend_dev_type (ggml-backend.h)
_KINDS = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "accelerator", 4: "meta"}


@dataclass(frozen=True)
class Device:
    name: str  # "CPU", "CUDA0", "MTL0", "Vulkan0"
    description: str
    kind: str  # "CPU", "GPU" (own memory), "iGPU" (host memory), "accelerator", "meta"
    free: int  # bytes
    total: int

    @property
    def backend(self) -> str:
        """The backend's name as the settings line gives it: "CUDA0" -> "CUDA", "MTL0" -> "Metal"."""
        stem = self.name.split("_")[0].rstrip("0123456789") or self.name
        return {"MTL": "Metal"}.get(stem, stem)


@functools.cache
def _ggml() -> ctypes.CDLL:
    lib = llama_cpp.llama_cpp._lib
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_count.argtypes = []
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.restype = None
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    return lib


def devices() -> list[Device]:
    """Every device llama.cpp registered, with its memory now (free memory changes: not cached).

    Empty where ggml's device API cannot be reached through llama-cpp-python's library handle.
    """
    try:
        lib = _ggml()
    except (AttributeError, OSError):
        return []
    found = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        found.append(
            Device(
                name=(lib.ggml_backend_dev_name(dev) or b"?").decode(errors="replace"),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                kind=_KINDS.get(lib.ggml_backend_dev_type(dev), "other"),
                free=int(free.value),
                total=int(total.value),
            )
        )
    return found


def gpus() -> list[Device]:
    """The devices with memory of their own, where llama.cpp puts offloaded layers and their KV cache."""
    return [d for d in devices() if d.kind == "GPU"]


def default_gpu_layers() -> int:
    """-1 (every layer) where llama.cpp was built to offload, else 0: llama-cli's default."""
    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


def resolve_gpu_layers(n_gpu_layers: int | None) -> int:
    return default_gpu_layers() if n_gpu_layers is None else n_gpu_layers
