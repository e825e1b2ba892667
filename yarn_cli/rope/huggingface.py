"""A GGUF's RoPE scaling as a Hugging Face config says it, for servers that run the HF model.

vLLM (and SGLang, TGI) serve the Hugging Face checkpoint, not the GGUF, and read the scaling from
its ``config.json``: vLLM 0.32 loads no GGUF at all, and transformers' GGUF loader (5.19) keeps a
converted file's ``context_length`` but drops its ``rope.scaling.*`` keys, so a checkpoint made
from a converted GGUF runs the longer context unscaled. These overrides give such a server the
scaling the file has: ``vllm serve MODEL --hf-overrides JSON --max-model-len N``.

vLLM sets a dict given in ``--hf-overrides`` whole, replacing the config's own ``rope_parameters``
rather than merging into it, so only architectures whose HF config holds its RoPE in that one
top-level entry, rotating whole heads, are mapped: sliding-window models (parameters per layer
type), partial rotary (``partial_rotary_factor`` would be lost), multimodal ones (RoPE in
``text_config``), per-dimension factor tensors (Llama 3, Phi-3) and trained YaRN models (their
configs carry terms the GGUF does not: DeepSeek's mscale, gpt-oss's truncate) get a reason instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from yarn_cli.rope.frequencies import yarn_mscale
from yarn_cli.rope.state import RopeParams, RopeState, Values, rope_params

# llama.cpp architectures whose Hugging Face configs keep RoPE in one top-level rope_parameters.
# llama.cpp ignores a file's YaRN betas for all of them (it reads them for grok and mistral3 only):
# they run with 32 and 1, HF's defaults, so no betas are written.
PLAIN_ARCHS = frozenset({
    "llama", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "granite", "granitemoe", "olmo", "olmoe", "internlm2",
    "phi3", "starcoder2", "exaone", "smollm3", "stablelm",
})  # fmt: skip


@dataclass(frozen=True)
class HfScaling:
    """The config entries, or why there are none."""

    overrides: dict[str, Any] | None  # top-level config keys: rope_parameters, max_position_embeddings
    context: int | None  # the context to serve (vLLM's --max-model-len)
    reason: str | None = None  # why the file's scaling has no such form

    def vllm_flags(self) -> str | None:
        if self.overrides is None:
            return None
        flags = f"--hf-overrides '{json.dumps(self.overrides, separators=(',', ':'))}'"
        return flags + (f" --max-model-len {self.context}" if self.context else "")

    def to_dict(self) -> dict[str, Any]:
        return {"overrides": self.overrides, "max_model_len": self.context, "vllm_flags": self.vllm_flags(),
                "reason": self.reason}  # fmt: skip


def hf_scaling(rope: RopeState, head_dim: int | None, values: Values | None = None) -> HfScaling:
    """What the file's keys (or ``values``, the keys a conversion will write) mean as Hugging Face config.

    Uses transformers 5's name, ``rope_parameters`` (transformers 4 called it ``rope_scaling``).
    """
    values = rope.current_values if values is None else values
    params = rope_params(values, rope.keys)
    context = params.context_length
    unmapped = _unmapped(rope, params, head_dim)
    if unmapped:
        return HfScaling(None, context, unmapped)
    scaling = params.scaling
    rope_parameters: dict[str, Any] = {"rope_theta": params.freq_base}
    if scaling.type == "yarn" and scaling.is_scaled:
        rope_parameters |= {
            "rope_type": "yarn",
            "factor": scaling.factor,
            "original_max_position_embeddings": scaling.original_context or rope.trained_context,
        }
        if scaling.attn_factor is not None:  # HF's attention_factor replaces 0.1 ln s + 1; llama.cpp multiplies it
            rope_parameters["attention_factor"] = yarn_mscale(scaling.factor, scaling.attn_factor)
    elif scaling.type == "linear" and scaling.is_scaled:
        rope_parameters |= {"rope_type": "linear", "factor": scaling.factor}
    else:  # no scaling, or yarn-cli's NTK-aware scaling: a raised base is all it is
        rope_parameters["rope_type"] = "default"
    overrides: dict[str, Any] = {"rope_parameters": rope_parameters}
    if context:
        # vLLM multiplies max_position_embeddings by a linear factor itself (not a YaRN one)
        linear = rope_parameters["rope_type"] == "linear"
        overrides["max_position_embeddings"] = round(context / scaling.factor) if linear else context
    return HfScaling(overrides, context)


def _unmapped(rope: RopeState, params: RopeParams, head_dim: int | None) -> str | None:
    scaling = params.scaling
    if not rope.uses_rope:
        return f"{rope.architecture} models do not use RoPE"
    if rope.factor_tensors:
        names = ", ".join(rope.factor_tensor_names)
        return (
            f"the model's per-dimension RoPE factors ({names}) are in its Hugging Face config's own "
            "rope_parameters; scale those there"
        )
    if rope.window is not None:
        return (
            "sliding-window models list rope_parameters per layer type in their Hugging Face configs; "
            "set the scaling on the full-attention layers' entry there"
        )
    if rope.trained_yarn or rope.yarn_log_multiplier is not None:
        return (
            f"the model came with its own YaRN, whose Hugging Face config has terms the GGUF does not carry; "
            f"set factor {scaling.factor:g} and max_position_embeddings {params.context_length} in it"
        )
    if rope.architecture not in PLAIN_ARCHS:
        return (
            f"the Hugging Face config of a {rope.architecture} model may keep its RoPE elsewhere than one "
            "top-level rope_parameters (per layer type, in text_config, with terms of its own); set the scaling "
            "in its config.json"
        )
    if rope.dims is None or head_dim is None:
        return "the file does not say how many of each head's dimensions it rotates"
    if rope.dims != head_dim:
        return (
            f"the model rotates {rope.dims} of its {head_dim} head dimensions; vLLM's --hf-overrides would replace "
            "the config's partial_rotary_factor with the rest of rope_parameters: set the scaling in its config.json"
        )
    if scaling.attn_factor is not None and scaling.type != "yarn":
        return f"the file sets an attention factor on {scaling.type} scaling, which Hugging Face configs cannot say"
    if scaling.is_scaled and scaling.type not in ("yarn", "linear"):
        return f"no Hugging Face form of {scaling.type} scaling is known here"
    return None
