"""The server on loopback, driven by the official ``openai`` client and by raw HTTP: models and
their fitted curves, chat and text completions (streamed and not), per-request steering in
``extra_body``, every bad request answered with a clear 4xx, disconnects, the queue's 429, the
API key, and a bounded load test."""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from unisteer.generation import generate
from unisteer.serve.server import Server

from serve_helpers import served, server, start  # noqa: F401 (fixtures used by name)

Q = "good system sea"


def client(s: Server, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0, timeout=60)


def raw(s: Server, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection(s.host, s.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json",
                                                       **(headers or {})})  # fmt: skip
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def chat(s: Server, **body: Any) -> tuple[int, Any]:
    payload = {"messages": [{"role": "user", "content": Q}], "max_tokens": 6, **body}
    status, _, data = raw(s, "POST", "/v1/chat/completions", json.dumps(payload).encode())
    return status, json.loads(data)


def test_models_lists_the_deltas_with_their_chosen_m_and_curves(server: Server) -> None:
    listed = client(server).models.list()
    assert [m.id for m in listed.data] == ["tiny"]
    status, _, data = raw(server, "GET", "/v1/models")
    deltas = {d["name"]: d for d in json.loads(data)["deltas"]}
    assert status == 200 and set(deltas) == {"vector-diffmean", "lora-sft"}
    curves = deltas["vector-diffmean"]["curves"]
    assert isinstance(deltas["vector-diffmean"]["chosen_m"], float)
    assert len(curves["m"]) == len(curves["preference"]) == len(curves["utility"]) == 101
    assert curves["m"][0] <= deltas["vector-diffmean"]["chosen_m"] <= curves["m"][-1]
    lora = deltas["lora-sft"]  # its fit did not converge on the tiny model: said, not hidden
    assert lora["kind"] == "lora" and lora["grid"][0] == -3.0
    assert lora["curves"] is None and "did not converge" in lora["fit_error"]


def test_chat_equals_generate_unsteered_and_steered(served: dict[str, Any], server: Server) -> None:
    from unisteer.serve.registry import experiment_deltas, load_one

    c = client(server)
    base = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": Q}],
                                     max_tokens=8)  # fmt: skip
    steering = [{"delta": "vector-diffmean", "m": 8.0, "positions": "completion"}]
    steered = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": Q}], max_tokens=8,
        extra_body={"steering": steering},
    )  # fmt: skip
    path = dict(experiment_deltas(served["out"]))["vector-diffmean"]
    delta = load_one("vector-diffmean", path, served["model"], served["tok"]).steerable
    want = generate(served["model"], served["tok"], [Q, Q], delta=delta, m=[0.0, 8.0],
                    positions="completion", max_new_tokens=8)  # fmt: skip
    assert (base.choices[0].message.content or "").strip() == want[0]
    assert (steered.choices[0].message.content or "").strip() == want[1]
    assert want[0] != want[1]
    assert steered.model_extra is not None
    assert steered.model_extra["steering"] == steering
    assert base.usage is not None and base.usage.completion_tokens <= 8


def test_streaming_gives_the_whole_answer_in_pieces(server: Server) -> None:
    c = client(server)
    steering = [{"delta": "vector-diffmean", "m": 2.0}]
    kw: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": Q}],
                          "max_tokens": 8, "extra_body": {"steering": steering}}  # fmt: skip
    whole = c.chat.completions.create(**kw).choices[0].message.content
    chunks = list(c.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                            **kw))  # fmt: skip
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert reasons[-1] in ("stop", "length") and all(r is None for r in reasons[:-1])


def test_text_completions_and_a_delta_as_the_model(server: Server) -> None:
    c = client(server)
    done = c.completions.create(model="tiny", prompt="good system", max_tokens=5)
    assert done.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(
        ch.choices[0].text
        for ch in c.completions.create(
            model="tiny", prompt="good system", max_tokens=5, stream=True
        )
    )
    assert streamed == done.choices[0].text
    # "model": a delta's name steers with the m its experiment chose
    _, _, data = raw(server, "GET", "/v1/models")
    chosen = {d["name"]: d["chosen_m"] for d in json.loads(data)["deltas"]}["vector-diffmean"]
    by_name = c.chat.completions.create(model="vector-diffmean", max_tokens=6,
                                        messages=[{"role": "user", "content": Q}])  # fmt: skip
    explicit = c.chat.completions.create(
        model="tiny", max_tokens=6, messages=[{"role": "user", "content": Q}],
        extra_body={"steering": [{"delta": "vector-diffmean",
                                  "m": chosen if chosen is not None else 1.0}]},
    )  # fmt: skip
    assert by_name.choices[0].message.content == explicit.choices[0].message.content


BAD = [
    (b"{not json", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "colour": 1}', 400, "unknown field"),
    (b'{"messages": []}', 400, "messages"),
    (b'{"messages": [{"role": "wizard", "content": "hi"}]}', 400, "role"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "steering": [{"delta": "nope"}]}',
     400, "no delta named 'nope'"),
    (b'{"messages": [{"role": "user", "content": "hi"}], '
     b'"steering": [{"delta": "lora-sft", "m": NaN}]}', 400, "finite"),
    (b'{"messages": [{"role": "user", "content": "hi"}], '
     b'"steering": [{"delta": "lora-sft", "m": Infinity}]}', 400, "finite"),
    (b'{"messages": [{"role": "user", "content": "hi"}], '
     b'"steering": [{"delta": "lora-sft", "m": 1000}]}', 400, "out of range"),
    (b'{"messages": [{"role": "user", "content": "hi"}], '
     b'"steering": [{"delta": "lora-sft", "m": 1, "positions": "middle"}]}', 400, "positions"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}', 400, "n must be 1"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', 400, "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}', 400,
     "context"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}', 400,
     "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"}', 404,
     "not served"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "says"), BAD)
def test_a_bad_request_gets_a_clear_error_and_the_server_lives(
    server: Server, body: bytes, status: int, says: str
) -> None:
    got, headers, data = raw(server, "POST", "/v1/chat/completions", body)
    error = json.loads(data)["error"]
    assert got == status and says in error["message"], error
    assert headers["Content-Type"] == "application/json"
    assert raw(server, "GET", "/health")[0] == 200


def test_other_bad_requests(server: Server) -> None:
    assert raw(server, "GET", "/v2/nothing")[0] == 404
    assert raw(server, "POST", "/v1/embeddings", b"{}")[0] == 404
    big = b'{"prompt": "' + b"x" * (1 << 20) + b'"}'
    assert raw(server, "POST", "/v1/completions", big)[0] == 413
    status, body = chat(server, steering={"delta": "lora-sft", "m": 1.0})  # one object is fine
    assert status == 200 and body["steering"][0]["delta"] == "lora-sft"


def test_a_client_that_leaves_mid_stream_cancels_its_request(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = server.app.engine
    step = engine._decode

    def slow() -> None:  # 100 tokens take seconds, not the tiny model's milliseconds
        time.sleep(0.02)
        step()

    monkeypatch.setattr(engine, "_decode", slow)
    body = json.dumps({"messages": [{"role": "user", "content": Q}], "max_tokens": 100,
                       "stream": True,
                       "steering": [{"delta": "vector-diffmean", "m": 2.0}]}).encode()  # fmt: skip
    cancelled = engine.ended["cancelled"]
    sock = socket.create_connection((server.host, server.port), timeout=30)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: " + str(len(body)).encode() +
                 b"\r\n\r\n" + body)  # fmt: skip
    seen = b""
    while b"data: " not in seen:  # the headers, then the first event
        chunk = sock.recv(4096)
        assert chunk, seen
        seen += chunk
    sock.close()
    deadline = time.monotonic() + 30
    while engine.ended["cancelled"] == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.ended["cancelled"] == cancelled + 1
    assert time.monotonic() < deadline - 25  # noticed within a few tokens, not at the end
    while engine.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.active == 0
    assert chat(server)[0] == 200


def test_a_full_queue_answers_429(served: dict[str, Any]) -> None:
    s = start(served, max_batch=1, max_waiting=1)
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: chat(s, max_tokens=60), range(8)))
    finally:
        s.close()
    statuses = [st for st, _ in results]
    assert 429 in statuses and 200 in statuses and set(statuses) <= {200, 429}
    busy = next(b for st, b in results if st == 429)
    assert busy["error"]["code"] == "queue_full"


def test_an_api_key_is_required_when_set(served: dict[str, Any]) -> None:
    s = start(served, api_key="s3cret")
    try:
        assert raw(s, "GET", "/v1/models")[0] == 401
        status, headers, _ = raw(s, "POST", "/v1/chat/completions", b"{}",
                                 {"Authorization": "Bearer wrong"})  # fmt: skip
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        with pytest.raises(openai.AuthenticationError):
            client(s, "wrong").models.list()
        assert client(s, "s3cret").models.list().data[0].id == "tiny"
        assert raw(s, "GET", "/health")[0] == 200  # no key for the health check
    finally:
        s.close()
    assert s.host == "127.0.0.1"  # loopback unless told otherwise


def test_sixteen_concurrent_http_requests_equal_each_alone(server: Server) -> None:
    """Mixed requests (deltas, m, positions, unsteered, lengths) sent together through the
    openai client get the greedy text each gets alone."""
    c = client(server)
    kinds: list[list[dict[str, Any]]] = [
        [],
        [{"delta": "vector-diffmean", "m": 4.0, "positions": "completion"}],
        [{"delta": "lora-sft", "m": -2.0}, {"delta": "vector-diffmean", "m": 1.0}],
        [{"delta": "lora-sft", "m": 3.0, "positions": "prompt"}],
    ]

    def ask(i: int) -> str:
        r = c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"{Q} {'good ' * (i % 4)}"}],
            max_tokens=3 + i % 10, extra_body={"steering": kinds[i % len(kinds)]},
        )  # fmt: skip
        return r.choices[0].message.content or ""

    alone = [ask(i) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, range(16)))
    assert together == alone


def test_load_on_loopback(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """48 mixed requests from 8 threads: all succeed, bounded in time; the numbers printed."""
    c = client(server)
    n, workers = 48, 8
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        steering = [] if i % 3 == 0 else [{"delta": ("lora-sft", "vector-diffmean")[i % 2],
                                           "m": float(i % 5 - 2)}]  # fmt: skip
        t = time.perf_counter()
        try:
            r = c.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"{Q} {i}"}],
                max_tokens=4 + i % 12, extra_body={"steering": steering},
            )  # fmt: skip
            assert r.choices[0].finish_reason in ("stop", "length")
        except Exception as e:  # counted, not raised: the test reports them all
            with lock:
                failures.append(repr(e))
            return
        with lock:
            latencies.append(time.perf_counter() - t)

    start_t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - start_t
    assert not failures, failures[:3]
    assert wall < 120
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    with capsys.disabled():  # the numbers reach the terminal and the CI log
        print(f"\nload: {n} requests, {workers} at a time: {n / wall:.1f} requests/s, "
              f"p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
              f"0 failed")  # fmt: skip
