"""Tiny random-weight causal LMs of several architectures, built in-process from configs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    BloomConfig,
    CohereConfig,
    FalconConfig,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    GraniteConfig,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    OPTConfig,
    Phi3Config,
    PhiConfig,
    Qwen2Config,
    Qwen2MoeConfig,
    Qwen3Config,
    Qwen3MoeConfig,
    StableLmConfig,
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
    "qwen3": lambda: _llama_like(Qwen3Config, head_dim=8),
    "stablelm": lambda: _llama_like(StableLmConfig, partial_rotary_factor=0.5),
    # Falcon with ALiBi: the bias reaches each block as a [batch * heads, 1, T] tensor.
    "falcon_alibi": lambda: FalconConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        alibi=True,
        new_decoder_architecture=False,
        multi_query=False,
        parallel_attn=False,
        bias=True,
        **SPECIAL,
    ),
    "phi": lambda: _llama_like(PhiConfig, partial_rotary_factor=0.5),
    "bloom": lambda: BloomConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=LAYERS, n_head=4, **SPECIAL
    ),
    # Logit scaling applied in the model's forward, outside any module.
    "cohere": lambda: _llama_like(CohereConfig, logit_scale=0.5, tie_word_embeddings=True),
    "granite": lambda: _llama_like(
        GraniteConfig, logits_scaling=4.0, residual_multiplier=0.5, embedding_multiplier=2.0
    ),
    "llama_tied": lambda: _llama_like(LlamaConfig, tie_word_embeddings=True),
    # Mixtures of experts, with the experts fused into 3-D parameters (transformers 5).
    "qwen2_moe": lambda: _llama_like(
        Qwen2MoeConfig,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=40,
        num_experts=4,
        num_experts_per_tok=2,
        decoder_sparse_step=1,
        mlp_only_layers=[],
    ),
    "mixtral": lambda: _llama_like(MixtralConfig, num_local_experts=4, num_experts_per_tok=2),
    # heads * head_dim = 64 != hidden 32, and an expert's inner width (24) below the hidden.
    "qwen3_moe": lambda: _llama_like(
        Qwen3MoeConfig,
        head_dim=16,
        moe_intermediate_size=24,
        num_experts=4,
        num_experts_per_tok=2,
        decoder_sparse_step=1,
        mlp_only_layers=[],
    ),
}

ARCHS = tuple(CONFIGS)
#: Mixtures of experts: no default site for lora / local_weight (see ``EXPERTS``).
MOE = ("qwen2_moe", "mixtral", "qwen3_moe")
#: Dense architectures: every kind has a default site.
DENSE = tuple(a for a in ARCHS if a not in MOE)
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
    "qwen3": "model.layers.{L}.mlp.down_proj",
    "stablelm": "model.layers.{L}.mlp.down_proj",
    "falcon_alibi": "transformer.h.{L}.mlp.dense_4h_to_h",
    "phi": "model.layers.{L}.mlp.fc2",
    "bloom": "transformer.h.{L}.mlp.dense_4h_to_h",
    "cohere": "model.layers.{L}.mlp.down_proj",
    "granite": "model.layers.{L}.mlp.down_proj",
    "llama_tied": "model.layers.{L}.mlp.down_proj",
}
#: The fused experts' down projection and the shared expert of a mixture-of-experts block.
EXPERTS = {
    "qwen2_moe": "model.layers.{L}.mlp.experts.down_proj",
    "mixtral": "model.layers.{L}.mlp.experts.down_proj",
    "qwen3_moe": "model.layers.{L}.mlp.experts.down_proj",
}
SHARED_EXPERT = {"qwen2_moe": "model.layers.{L}.mlp.shared_expert.down_proj"}
BLOCKS = {
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
    "falcon_alibi": "transformer.h",
    "bloom": "transformer.h",
}


def tiny_model(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    torch.manual_seed(seed)
    config = CONFIGS[arch]()
    return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
