"""How llama.cpp applies RoPE, per architecture: which have none, which scale only some layers.

Taken from llama.cpp's loader (``llama_model::load_hparams``) and graph builders.
"""

from __future__ import annotations

# Architectures whose positions are not rotary, with the reason shown to the user.
NO_ROPE_ARCHS: dict[str, str] = {
    "bloom": "ALiBi attention biases",
    "mpt": "ALiBi attention biases",
    "jais": "ALiBi attention biases",
    "refact": "ALiBi attention biases",
    "jina-bert-v2": "ALiBi attention biases",
    "gpt2": "learned absolute position embeddings",
    "starcoder": "learned absolute position embeddings",
    "bert": "learned absolute position embeddings",
    "t5": "T5 relative position buckets",
    "t5encoder": "T5 relative position buckets",
    "mamba": "a recurrent state space model",
    "mamba2": "a recurrent state space model",
    "rwkv6": "a recurrent (RWKV) model",
    "rwkv6qwen2": "a recurrent (RWKV) model",
    "rwkv7": "a recurrent (RWKV) model",
    "arwkv7": "a recurrent (RWKV) model",
}

# Where llama.cpp applies the scaling to the global-attention layers only.
SWA_ARCHS = frozenset({"gemma2", "gemma3", "gemma3n", "cohere2", "gpt-oss"})
# Architectures whose loader reads the yarn_beta_fast / yarn_beta_slow keys.
BETA_ARCHS = frozenset({"grok", "mistral3"})
