"""The OpenAI-compatible judge against real HTTP servers on loopback (started by the tests).

Servers: a normal one, one that sleeps past the client's timeout, one that returns garbage
(non-JSON, or JSON without a rating), one that fails with HTTP 500 (then recovers, or never),
and one that echoes the key in an error. The API key must never appear in a file, a log record
or an exception message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from unisteer.evaluate.judges.base import JudgeError, RatingRequest
from unisteer.evaluate.judges.http import HTTPJudge
from unisteer.evaluate.judges.prompts import build_prompt, parse_rating

KEY = "sk-test-7f3a9c-SECRET-KEY-do-not-leak"
ENV = "UNISTEER_TEST_JUDGE_KEY"


def chat_answer(content: Any) -> bytes:
    return json.dumps(
        {"id": "x", "object": "chat.completion", "choices": [{"message": {"content": content}}]}
    ).encode()


def rate_by_prompt(prompt: str) -> bytes:
    """A fake LLM: fluency 1, instruction 2, concept 0, with a rationale first."""
    if "how fluent" in prompt:
        return chat_answer("Some clumsy phrasing.\nRating: [[1]]")
    if "Request begins" in prompt:
        return chat_answer("It is on topic.\n\nRating: [[2]]")
    return chat_answer("The concept is missing.\nRating: [[0]].")


class Server:
    """A loopback chat-completions server whose behaviour is a function of the request number."""

    def __init__(self, behave: Callable[[int, dict[str, Any]], tuple[int, bytes, float]]) -> None:
        self.behave = behave
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    n = len(server.requests)
                    server.requests.append({"path": self.path, **body})
                    server.auth.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload, delay = server.behave(n, body)
                    if delay:
                        time.sleep(delay)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(behave: Callable[[int, dict[str, Any]], tuple[int, bytes, float]]) -> Server:
        s = Server(behave)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV, KEY)
    return KEY


def judge_for(server: Server, tmp_path: Path, **kwargs: Any) -> HTTPJudge:
    options: dict[str, Any] = {
        "base_url": server.url,
        "model": "judge-model",
        "api_key_env": ENV,
        "timeout": 2.0,
        "max_retries": 2,
        "backoff": 0.01,
        "cache_dir": tmp_path / "cache",
        **kwargs,
    }
    return HTTPJudge(**options)


def assert_no_key(tmp_path: Path, caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    for record in caplog.records:
        assert KEY not in record.getMessage()
    for text in texts:
        assert KEY not in text


def test_normal_server_ratings_cache_and_key(
    serve: Callable[..., Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve(lambda n, body: (200, rate_by_prompt(body["messages"][0]["content"]), 0.0))
    judge = judge_for(server, tmp_path, temperature=0.0)
    assert judge.rate("concept", "the sea", "Tell me a joke.", "A joke about cats.")[0] == 0
    score, why = judge.rate("fluency", "the sea", "Tell me a joke.", "A joke about cats.")
    assert (score, why) == (1, "Some clumsy phrasing.\nRating: [[1]]")
    assert judge.rate("instruction", "the sea", "Tell me a joke.", "A joke.")[0] == 2
    assert len(server.requests) == 3
    sent = server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["model"] == "judge-model" and sent["temperature"] == 0.0
    assert sent["messages"] == [
        {"role": "user", "content": build_prompt("concept", "the sea", "Tell me a joke.",
                                                 "A joke about cats.")}
    ]  # fmt: skip
    assert server.auth == [f"Bearer {KEY}"] * 3  # the key is used ...
    # ... the cache answers the same question without a request, also in a new judge
    again = judge_for(server, tmp_path)
    assert again.rate("fluency", "the sea", "Tell me a joke.", "A joke about cats.")[0] == 1
    assert len(server.requests) == 3 and again.cache_hits == 1
    # another temperature is another cache entry
    judge_for(server, tmp_path, temperature=0.7).rate("fluency", "x", "y", "A joke about cats.")
    assert len(server.requests) == 4
    assert judge.parse_failures == 0 and judge.ratings == 3
    assert judge.name == "llm:judge-model@T0"
    assert KEY not in json.dumps(judge.provenance()) and KEY not in repr(vars(judge))
    assert_no_key(tmp_path, caplog)


def test_concurrency_and_batch_order(serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve(lambda n, body: (200, rate_by_prompt(body["messages"][0]["content"]), 0.2))
    judge = judge_for(server, tmp_path, concurrency=4)
    requests = [
        RatingRequest(c, "the sea", f"instruction {i}", f"text {i}")  # type: ignore[arg-type]
        for i in range(4)
        for c in ("concept", "instruction", "fluency")
    ]
    requests.append(requests[0])  # a duplicate is asked once
    start = time.monotonic()
    scores = judge.rate_many(requests)
    elapsed = time.monotonic() - start
    assert [s for s, _ in scores] == [0, 2, 1] * 4 + [0]
    assert len(server.requests) == 12
    assert server.max_in_flight > 1
    assert elapsed < 12 * 0.2  # not one after the other


def test_timeout_is_retried_then_fails(
    serve: Callable[..., Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    slow_once = serve(
        lambda n, body: (200, chat_answer("ok\nRating: [[2]]"), 1.5 if n == 0 else 0.0)
    )
    judge = judge_for(slow_once, tmp_path, timeout=0.3)
    assert judge.rate("fluency", "", "", "Fine text.") == (2, "ok\nRating: [[2]]")
    assert len(slow_once.requests) == 2  # the first timed out, the retry answered
    always_slow = serve(lambda n, body: (200, chat_answer("Rating: [[2]]"), 1.5))
    judge = judge_for(always_slow, tmp_path / "other", timeout=0.3, max_retries=1)
    with pytest.raises(JudgeError, match="after 2 attempts") as err:
        judge.rate("fluency", "", "", "Fine text.")
    assert "within 0.3 s" in str(err.value)
    assert len(always_slow.requests) == 2
    assert_no_key(tmp_path, caplog, str(err.value))


def test_garbage_answers_score_zero_and_are_counted(
    serve: Callable[..., Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answers = [
        b"<html>not json</html>",
        json.dumps({"unexpected": True}).encode(),
        chat_answer("I think it is fine."),  # no rating
        chat_answer("Rating: [[3]]"),  # out of range
        chat_answer("Rating: [[1.5]]"),
        chat_answer(None),
        chat_answer("Rating: [[2]]"),
    ]
    server = serve(lambda n, body: (200, answers[n], 0.0))
    judge = judge_for(server, tmp_path, concurrency=1)
    results = [judge.rate("fluency", "", "", f"text {i}") for i in range(len(answers))]
    assert [s for s, _ in results] == [0, 0, 0, 0, 0, 0, 2]
    assert judge.parse_failures == 6 and judge.ratings == 7
    assert results[2][1] == "I think it is fine."
    # malformed bodies are not cached (asked again later); parseable answers are
    again = judge_for(server, tmp_path, concurrency=1)
    answers.extend([chat_answer("Rating: [[1]]")] * 2)
    assert again.rate("fluency", "", "", "text 0")[0] == 1  # re-asked
    assert again.rate("fluency", "", "", "text 2")[0] == 0  # cached: no request
    assert len(server.requests) == 8
    assert_no_key(tmp_path, caplog)


def test_http_500_is_retried(
    serve: Callable[..., Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flaky = serve(
        lambda n, body: (
            (500, b'{"error": "overloaded"}', 0.0)
            if n < 2
            else (200, chat_answer("Rating: [[2]]"), 0.0)
        )
    )
    judge = judge_for(flaky, tmp_path, max_retries=3)
    assert judge.rate("concept", "c", "i", "t")[0] == 2
    assert len(flaky.requests) == 3
    assert any("retry 1 of 3" in r.getMessage() for r in caplog.records)
    broken = serve(lambda n, body: (500, b"internal error", 0.0))
    judge = judge_for(broken, tmp_path / "b", max_retries=2)
    with pytest.raises(JudgeError, match="HTTP 500") as err:
        judge.rate("concept", "c", "i", "t")
    assert len(broken.requests) == 3 and judge.requests_sent == 3
    assert not list((tmp_path / "b").rglob("*.json"))  # failures are not cached
    assert_no_key(tmp_path, caplog, str(err.value))


def test_client_errors_fail_fast_and_the_key_is_redacted(
    serve: Callable[..., Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = serve(
        lambda n, body: (401, json.dumps({"error": f"Incorrect API key provided: {KEY}"}).encode(),
                         0.0)
    )  # fmt: skip
    judge = judge_for(echo, tmp_path)
    with pytest.raises(JudgeError, match="HTTP 401") as err:
        judge.rate("concept", "c", "i", "t")
    assert len(echo.requests) == 1  # not retried
    assert "[REDACTED]" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert_no_key(tmp_path, caplog, str(err.value), repr(err.value))


def test_unreachable_server_and_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Callable[..., Server]
) -> None:
    judge = HTTPJudge(
        "m", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff=0.01, timeout=1.0
    )
    with pytest.raises(JudgeError, match="cannot reach"):
        judge.rate("fluency", "", "", "x")
    monkeypatch.delenv(ENV)
    server = serve(lambda n, body: (200, chat_answer("Rating: [[1]]"), 0.0))
    assert judge_for(server, tmp_path).rate("fluency", "", "", "x")[0] == 1
    assert server.auth == [None]  # no key in the environment: no Authorization header


def test_parse_rating() -> None:
    assert parse_rating("Because.\nRating: [[2]]") == 2
    assert parse_rating("Rating: [[1]] then more text\nRating: [[0]]") == 0  # the last one
    assert parse_rating("rating: 2.") == 2
    assert parse_rating("Rating: **[[1]]**\nThanks") == 1
    assert parse_rating('Rating: "2.0"') == 2
    for bad in ("", "Score: 2", "Rating: [[3]]", "Rating: [[-1]]", "Rating: [[1.5]]",
                "Rating: two"):  # fmt: skip
        assert parse_rating(bad) is None, bad
