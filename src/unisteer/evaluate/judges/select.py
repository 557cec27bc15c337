"""Choosing a judge by name, as ``unisteer eval axbench --judge`` does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unisteer.evaluate.judges.base import Judge


def make_judge(
    kind: str,
    *,
    concepts_path: str | Path | None = None,
    model: Any = None,
    tokenizer: Any = None,
    judge_model: str | None = None,
    base_url: str | None = None,
    temperature: float = 0.0,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 4,
    timeout: float = 60.0,
    max_retries: int = 3,
    cache_dir: str | Path | None = None,
    embeddings: str = "auto",
    proxy_nll: bool = True,
    concept_ids: Sequence[int] | None = None,
) -> Judge:
    """A judge by kind.

    * ``"proxy"``: fitted on ``concepts_path`` (only on ``concept_ids`` when given); the base
      ``model`` adds the NLL fluency statistic unless ``proxy_nll=False``.
    * ``"http"``: ``judge_model`` at ``base_url`` (OpenAI-compatible; key from ``api_key_env``).
    * ``"local"``: ``judge_model`` is a local model path or name, loaded with
      :func:`unisteer.load_model`.
    """
    if kind == "proxy":
        if concepts_path is None:
            raise ValueError("the proxy judge is trained on concept data: pass concepts_path")
        from unisteer.evaluate.judges.proxy import ProxyJudge

        use_model = model if proxy_nll else None
        return ProxyJudge.fit(
            concepts_path,
            model=use_model,
            tokenizer=tokenizer if use_model is not None else None,
            embeddings=embeddings,
            concept_ids=concept_ids,
        )
    if kind == "http":
        from unisteer.evaluate.judges.http import DEFAULT_BASE_URL, HTTPJudge

        return HTTPJudge(
            judge_model or "gpt-4o-mini",
            base_url=base_url or DEFAULT_BASE_URL,
            temperature=temperature,
            api_key_env=api_key_env,
            concurrency=concurrency,
            timeout=timeout,
            max_retries=max_retries,
            cache_dir=cache_dir,
        )
    if kind == "local":
        if not judge_model:
            raise ValueError("the local judge needs judge_model (a model path or name)")
        from unisteer.evaluate.judges.local import LocalJudge
        from unisteer.model.load import load_model

        jm, jt = load_model(judge_model)
        return LocalJudge(jm, jt, name=f"local:{judge_model}")
    raise ValueError(f"judge must be 'proxy', 'http' or 'local', got {kind!r}")
