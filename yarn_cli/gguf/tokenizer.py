"""What a header says of the model's tokenizer (the GGUF spec's ``tokenizer.*`` keys), for ``inspect``: a
missing chat template otherwise shows only once chat runs.

The vocabulary is counted, never decoded: the array's length is in its field, and only the tokens
named (BOS, EOS) are read from its bytes. A value its key's meaning rules out (text for an id, a
number for the tokenizer's name) is a ``DamagedValueError`` naming the key, as everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gguf import GGUFValueType, Keys

from yarn_cli.gguf.header import GGUFHeader
from yarn_cli.gguf.values import DamagedValueError, as_count, as_flag, as_text

# A template's markers, and the name llama.cpp gives its format (llm_chat_detect_template)
TEMPLATE_FORMATS = (
    ("<|im_start|>", "chatml"),
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma"),
    ("<|channel|>", "gpt-oss"),
    ("[INST]", "llama2/mistral"),
)
# llama.cpp's vocabulary types (llama_vocab_type), by the name tokenizer.ggml.model gives them
ALGORITHMS = {"llama": "SentencePiece", "gpt2": "BPE", "bert": "WordPiece", "t5": "Unigram", "rwkv": "RWKV"}
TEMPLATE_START = 40  # characters of a template shown where no format is recognised


@dataclass(frozen=True)
class SpecialToken:
    id: int
    text: str | None  # None: the id lies outside the vocabulary

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text}


@dataclass(frozen=True)
class ChatTemplate:
    length: int  # characters
    format: str | None  # chatml, llama3...: where its markers say so
    start: str  # its first characters

    def to_dict(self) -> dict[str, Any]:
        return {"length": self.length, "format": self.format, "start": self.start}


@dataclass(frozen=True)
class TokenizerInfo:
    """The tokenizer as the file states it; None where a key is absent."""

    model: str | None  # tokenizer.ggml.model: llama (SentencePiece), gpt2 (BPE)...
    pre: str | None  # the pre-tokenizer (BPE): smollm, llama-bpe, qwen2...
    tokens: int | None  # the vocabulary's size
    bos: SpecialToken | None
    eos: SpecialToken | None
    add_bos: bool | None  # whether the BOS token is put in front of a prompt
    chat_template: ChatTemplate | None

    @property
    def algorithm(self) -> str | None:
        """What ``model`` names: llama is SentencePiece, gpt2 is BPE..."""
        return ALGORITHMS.get(self.model or "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "algorithm": self.algorithm,
            "pre": self.pre,
            "tokens": self.tokens,
            "bos": None if self.bos is None else self.bos.to_dict(),
            "eos": None if self.eos is None else self.eos.to_dict(),
            "add_bos": self.add_bos,
            "chat_template": None if self.chat_template is None else self.chat_template.to_dict(),
        }


def read_tokenizer(header: GGUFHeader) -> TokenizerInfo:
    """The tokenizer keys of ``header``, each read through its typed reader."""
    tokens_key = Keys.Tokenizer.LIST
    bos_id = as_count(Keys.Tokenizer.BOS_ID, header.get(Keys.Tokenizer.BOS_ID))
    eos_id = as_count(Keys.Tokenizer.EOS_ID, header.get(Keys.Tokenizer.EOS_ID))
    texts = header.strings_at(tokens_key, [i for i in (bos_id, eos_id) if i is not None])
    template = as_text(Keys.Tokenizer.CHAT_TEMPLATE, header.get(Keys.Tokenizer.CHAT_TEMPLATE))
    return TokenizerInfo(
        model=as_text(Keys.Tokenizer.MODEL, header.get(Keys.Tokenizer.MODEL)),
        pre=as_text(Keys.Tokenizer.PRE, header.get(Keys.Tokenizer.PRE)),
        tokens=_vocabulary_size(header, tokens_key),
        bos=None if bos_id is None else SpecialToken(bos_id, texts.get(bos_id)),
        eos=None if eos_id is None else SpecialToken(eos_id, texts.get(eos_id)),
        add_bos=as_flag(Keys.Tokenizer.ADD_BOS, header.get(Keys.Tokenizer.ADD_BOS)),
        chat_template=None if template is None else _chat_template(template),
    )


def _vocabulary_size(header: GGUFHeader, key: str) -> int | None:
    found = header.fields.get(key)
    if found is None:
        return None
    if not found.is_array or found.item_type != GGUFValueType.STRING:
        raise DamagedValueError(key, found.value, "a list of text (the tokens)")
    return found.length


def _chat_template(template: str) -> ChatTemplate:
    known = next((name for marker, name in TEMPLATE_FORMATS if marker in template), None)
    return ChatTemplate(len(template), known, template[:TEMPLATE_START])
