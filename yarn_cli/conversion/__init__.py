"""The convert use case: plan a RoPE-scaling change to a GGUF model, name and check its outputs (the
model's files and its Ollama Modelfile), and write them all together.

One concept per module: ``plan`` (the keys, pure), ``outputs`` (names and checks), ``modelfile``,
``in_use`` (no in-place change under a running process), ``writing`` (lock, recover, write).
"""

from yarn_cli.conversion.in_use import InUseError
from yarn_cli.conversion.modelfile import Modelfile
from yarn_cli.conversion.plan import ConversionPlan, ConvertRequest, KeyChange, plan_conversion
from yarn_cli.conversion.writing import (
    ConvertResult,
    ModelfileResult,
    Recovery,
    WrittenFile,
    convert_file,
    convert_variant,
    recover_file,
    wants_modelfile_alone,
    write_modelfile,
)

__all__ = [
    "ConversionPlan",
    "ConvertRequest",
    "ConvertResult",
    "InUseError",
    "KeyChange",
    "Modelfile",
    "ModelfileResult",
    "Recovery",
    "WrittenFile",
    "convert_file",
    "convert_variant",
    "plan_conversion",
    "recover_file",
    "wants_modelfile_alone",
    "write_modelfile",
]
