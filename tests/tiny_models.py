"""Tiny random-weight causal LMs of several architectures, built in-process from configs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Phi3Config,
    Qwen2Config,
)

VOCAB = 96
HIDDEN = 32
LAYERS = 4
SPECIAL = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def _llama_like(cls: Any, **extra: Any) -> Any:
    return cls(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=80,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **SPECIAL,
        **extra,
    )


CONFIGS: dict[str, Callable[[], Any]] = {
    "llama": lambda: _llama_like(LlamaConfig),
    "qwen2": lambda: _llama_like(Qwen2Config),
    "mistral": lambda: _llama_like(MistralConfig, sliding_window=64),
    "gemma2": lambda: _llama_like(
        Gemma2Config, head_dim=8, sliding_window=64, query_pre_attn_scalar=8
    ),
    # head_dim 16 x 4 heads = 64 > hidden 32: o_proj reads a wider input than the hidden size.
    "gemma3": lambda: _llama_like(
        Gemma3TextConfig, head_dim=16, sliding_window=64, query_pre_attn_scalar=16
    ),
    "phi3": lambda: Phi3Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=80,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    ),
    "gpt2": lambda: GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=128, **SPECIAL
    ),
    "gpt_neox": lambda: GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=80,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        max_position_embeddings=128,
        **SPECIAL,
    ),
    "opt": lambda: OPTConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        ffn_dim=80,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        max_position_embeddings=128,
        word_embed_proj_dim=HIDDEN,
        **SPECIAL,
    ),
}

ARCHS = tuple(CONFIGS)
#: The expected down-projection path of block L, written by hand per architecture.
DOWN_PROJ = {
    "llama": "model.layers.{L}.mlp.down_proj",
    "qwen2": "model.layers.{L}.mlp.down_proj",
    "mistral": "model.layers.{L}.mlp.down_proj",
    "gemma2": "model.layers.{L}.mlp.down_proj",
    "gemma3": "model.layers.{L}.mlp.down_proj",
    "phi3": "model.layers.{L}.mlp.down_proj",
    "gpt2": "transformer.h.{L}.mlp.c_proj",
    "gpt_neox": "gpt_neox.layers.{L}.mlp.dense_4h_to_h",
    "opt": "model.decoder.layers.{L}.fc2",
}
BLOCKS = {
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
}


def tiny_model(arch: str, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = CONFIGS[arch]()
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
