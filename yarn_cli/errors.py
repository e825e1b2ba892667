"""Library exceptions. Each message is one line that says what is wrong and what to do.

The CLI prints ``Error: <message>`` and exits 1; nothing here prints or exits.
"""

from __future__ import annotations


class YarnCliError(Exception):
    """Base class: a failure the user can act on, reported without a traceback."""


class InputError(YarnCliError):
    """A bad argument or combination of arguments (wrong factor, missing file...)."""


class NotGGUFError(YarnCliError):
    """The file is not a GGUF model, is truncated, or its header is corrupt."""


class UnsupportedModelError(YarnCliError):
    """The model is a valid GGUF but cannot be handled as asked (no RoPE, longrope...)."""


class OutputError(YarnCliError):
    """The output cannot be written: it exists, its folder is missing, the disk is full."""


class VerificationError(YarnCliError):
    """The written file does not read back as intended; it was removed."""


class ModelLoadError(YarnCliError):
    """llama.cpp could not load the model or create its context."""


class EvaluationError(YarnCliError):
    """llama.cpp refused to evaluate tokens (out of memory, a context too small, a backend error)."""


class ServerError(YarnCliError):
    """A model server could not be reached, or answered with an error or with something unexpected."""


class ContextExceededError(ServerError):
    """A server refused a prompt longer than its context."""
