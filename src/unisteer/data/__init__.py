"""Polarity-paired data: types, readers, converters, chat formatting and tokenisation."""

from typing import TYPE_CHECKING

from unisteer.data.anthropic import read_advanced_ai_risk, read_anthropic, read_persona
from unisteer.data.axbench import read_axbench
from unisteer.data.caa import read_caa_ab
from unisteer.data.default import DEFAULT_CONCEPTS, default_dataset, default_split
from unisteer.data.pairs import PairSet, PolarityPair
from unisteer.data.problems import Problem
from unisteer.data.readers import (
    read_csv,
    read_hf_dataset,
    read_json,
    read_jsonl,
    read_pairs,
    read_parquet,
)
from unisteer.data.sources import load_pairs
from unisteer.lazy import lazy_exports

if TYPE_CHECKING:
    from unisteer.data.tokens import Batch, Encoded, collate, encode, encode_pair

# Tokenisation needs torch; the readers and converters do not.
_TOKENS = dict.fromkeys(
    ("Batch", "Encoded", "collate", "encode", "encode_pair"), "unisteer.data.tokens"
)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _TOKENS)

__all__ = [
    "DEFAULT_CONCEPTS",
    "Batch",
    "Encoded",
    "PairSet",
    "PolarityPair",
    "Problem",
    "collate",
    "default_dataset",
    "default_split",
    "encode",
    "encode_pair",
    "load_pairs",
    "read_advanced_ai_risk",
    "read_anthropic",
    "read_axbench",
    "read_caa_ab",
    "read_csv",
    "read_hf_dataset",
    "read_json",
    "read_jsonl",
    "read_pairs",
    "read_parquet",
    "read_persona",
]
