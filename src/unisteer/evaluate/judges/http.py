"""A judge behind any OpenAI-compatible chat-completions endpoint (standard library only).

>>> judge = HTTPJudge("gpt-4o-mini", temperature=0.0, cache_dir="judge-cache")
>>> judge.rate("fluency", "", "", "The the the cat cat.")
(0, 'The fragment repeats ... Rating: [[0]]')

* ``POST {base_url}/chat/completions`` with one user message per rating; ``concurrency``
  requests run at once in threads.
* The API key is read from the environment variable ``api_key_env`` (default
  ``OPENAI_API_KEY``) when a request is sent, and only put in the ``Authorization`` header. It is
  never stored on the judge, never written to the cache or any output, and removed from every
  log message and exception text. Without the variable, requests go without a key (fine for a
  local server).
* Timeouts, connection errors, HTTP 408, 429 and 5xx are retried with exponential backoff
  (``backoff · 2^attempt`` seconds, capped, honouring ``Retry-After``); after ``max_retries``
  retries, or on any other HTTP error, :class:`~unisteer.evaluate.judge.JudgeError` is raised.
* A 200 answer that is not the expected JSON, or whose text has no valid ``Rating: [[N]]``,
  scores 0 and is counted in ``parse_failures`` (AxBench does not re-ask either). Malformed
  bodies are not cached, so a later run asks again.
* Answers are cached on disk under the SHA-256 of (base URL, model, temperature, prompt): asking
  the same thing twice sends one request.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from unisteer.evaluate.judges.base import JudgeError, PromptJudge
from unisteer.evaluate.judges.disk_cache import DiskCache, content_key
from unisteer.evaluate.judges.prompts import templates_hash

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MALFORMED = "[no rating: the server's answer was not a chat completion]"


class _Transient(Exception):
    """A failure worth retrying; ``wait`` is a server-requested delay (Retry-After)."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class HTTPJudge(PromptJudge):
    """LLM judge over an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: the model name sent to the server (e.g. ``"gpt-4o-mini"``).
        base_url: the API root, e.g. ``"http://127.0.0.1:8080/v1"`` for a local server.
        temperature: the judge's sampling temperature (0 matches RePS-era AxBench).
        api_key_env: name of the environment variable holding the key.
        concurrency: requests in flight at once (threads).
        timeout: seconds to wait for each response.
        max_retries: retries after the first attempt for transient failures.
        backoff: first retry delay in seconds; doubles every retry, capped at ``max_backoff``.
        cache_dir: where answers are cached (``None``: no cache).
        max_tokens: optional cap on the answer length, sent to the server.
    """

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        *,
        base_url: str = DEFAULT_BASE_URL,
        temperature: float = 0.0,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        cache_dir: str | Path | None = None,
        max_tokens: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0 and timeout > 0")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.temperature = float(temperature)
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_tokens = max_tokens
        self.cache = DiskCache(cache_dir) if cache_dir is not None else None
        self.name = name or f"llm:{model}@T{self.temperature:g}"
        self.requests_sent = 0  # HTTP attempts, retries included
        self.cache_hits = 0
        self._stats = threading.Lock()

    def provenance(self) -> dict[str, Any]:
        return {
            **super().provenance(),
            "base_url": self.base_url,
            "model": self.model,
            "temperature": self.temperature,
            "templates": templates_hash(),
        }

    # -- secrets ----------------------------------------------------------------------------

    def _key(self) -> str:
        return os.environ.get(self.api_key_env, "")

    def _redact(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "[REDACTED]") if key else text

    # -- one request ------------------------------------------------------------------------

    def cache_key(self, prompt: str) -> str:
        parts: list[Any] = [self.base_url, self.model, self.temperature, prompt]
        if self.max_tokens is not None:
            parts.append(self.max_tokens)
        return content_key(*parts)

    def _payload(self, prompt: str) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return json.dumps(body).encode("utf-8")

    def _post_once(self, prompt: str) -> tuple[str, bool]:
        """(answer text, well-formed?) for one attempt; raises _Transient or JudgeError."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            self.url, data=self._payload(prompt), headers=headers, method="POST"
        )
        with self._stats:
            self.requests_sent += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = self._redact(_safe_read(e)[:200])
            message = f"{self.url} answered HTTP {e.code}: {detail}"
            if e.code in _RETRY_STATUS:
                raise _Transient(message, _retry_after(e)) from None
            raise JudgeError(message) from None
        except TimeoutError as e:
            raise _Transient(f"no answer from {self.url} within {self.timeout:g} s ({e})") from None
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Transient(f"cannot reach {self.url}: {self._redact(str(reason))}") from None
        return _answer_text(raw)

    def _post(self, prompt: str) -> str:
        """The answer to ``prompt``, from the cache or the server (with retries)."""
        key = self.cache_key(prompt)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                with self._stats:
                    self.cache_hits += 1
                return cached
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                answer, well_formed = self._post_once(prompt)
            except _Transient as e:
                if attempt + 1 >= attempts:
                    raise JudgeError(
                        f"judge request failed after {attempts} attempts: {self._redact(str(e))}"
                    ) from None
                delay = min(self.max_backoff, self.backoff * 2**attempt)
                if e.wait is not None:
                    delay = min(self.max_backoff, max(delay, e.wait))
                delay *= 1.0 + 0.1 * random.random()
                log.warning(
                    "judge request failed (%s); retry %d of %d in %.2f s",
                    self._redact(str(e)),
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
                continue
            if not well_formed:
                log.warning("the judge server at %s sent a malformed answer; scored 0", self.url)
                return MALFORMED
            if self.cache is not None:
                self.cache.put(key, answer)
            return answer
        raise AssertionError("unreachable")

    # -- many requests ------------------------------------------------------------------------

    def complete(self, prompts: Sequence[str], *, progress: bool = False) -> list[str]:
        unique = list(dict.fromkeys(prompts))
        answers: dict[str, str] = {}
        bar = tqdm(total=len(unique), desc=f"judging ({self.name})", disable=not progress)
        try:
            if self.concurrency == 1 or len(unique) == 1:
                for p in unique:
                    answers[p] = self._post(p)
                    bar.update(1)
            else:
                with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                    futures = {pool.submit(self._post, p): p for p in unique}
                    try:
                        for future in as_completed(futures):
                            answers[futures[future]] = future.result()
                            bar.update(1)
                    except BaseException:
                        for f in futures:
                            f.cancel()
                        raise
        finally:
            bar.close()
        return [answers[p] for p in prompts]


def _safe_read(e: urllib.error.HTTPError) -> str:
    try:
        return e.read().decode("utf-8", "replace")
    except Exception:
        return ""


def _retry_after(e: urllib.error.HTTPError) -> float | None:
    value = e.headers.get("Retry-After") if e.headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _answer_text(raw: bytes) -> tuple[str, bool]:
    """``choices[0].message.content`` of a chat-completions response, and whether it was there."""
    try:
        data = json.loads(raw.decode("utf-8"))
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError):
        return MALFORMED, False
    if not isinstance(content, str):
        return MALFORMED, False
    return content, True
