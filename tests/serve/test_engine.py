"""The serving engine on a tiny model: concurrent requests, each with its own deltas, m and
positions, decode as one batch and give the text each gives alone (and that generate() gives);
rows join and leave the batch's KV cache exactly; cancelling, stop strings, sampling."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.cache_utils import DynamicCache

from unisteer.data.chat import prompt_text
from unisteer.generation import generate_detailed
from unisteer.model.kv import BatchCache
from unisteer.serve.engine import Engine, Finished, Job, SteerSpec, collect

from conftest import make_delta
from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    model = tiny_model("llama")
    tok = word_tokenizer(chat_template=CHATML)
    return {
        "model": model,
        "tok": tok,
        "a": make_delta(model, "vector", layer=1),
        "b": make_delta(model, "lora", layer=2, seed=1),
    }


def ids(tok: Any, query: str) -> list[int]:
    return list(tok(prompt_text(tok, query), add_special_tokens=False)["input_ids"])


def mixed(setup: dict[str, Any], n: int = 16) -> list[Job]:
    """``n`` requests: unsteered, one delta at some positions, two deltas, m = 0; different
    prompt and answer lengths."""
    a, b, tok = setup["a"], setup["b"], setup["tok"]
    choices = [
        (),
        (SteerSpec("a", a, 2.0, "completion"),),
        (SteerSpec("b", b, -1.5, "all"), SteerSpec("a", a, 1.0, "all")),
        (SteerSpec("a", a, 3.0, "prompt"),),
        (SteerSpec("a", a, 0.0, "all"),),
    ]
    pairs = random_pairs(n, seed=7)
    return [
        Job(ids(tok, p.query), choices[i % len(choices)], max_tokens=3 + i % 9)
        for i, p in enumerate(pairs)
    ]


def run(engine: Engine, jobs: list[Job]) -> list[tuple[str, str, int]]:
    out = []
    for job in jobs:
        text, end = collect(job, timeout=60)
        out.append((text, end.reason, end.completion_tokens))
    return out


def fresh(job: Job) -> Job:
    return Job(job.prompt, job.steering, job.max_tokens, job.temperature, job.top_p, job.seed)


def test_sixteen_concurrent_requests_equal_each_alone(setup: dict[str, Any]) -> None:
    jobs = mixed(setup)
    engine = Engine(setup["model"], setup["tok"]).start()
    try:
        alone = [run(engine, [engine.submit(fresh(j))])[0] for j in jobs]
        together = run(engine, [engine.submit(j) for j in jobs])
    finally:
        engine.stop()
    assert engine.max_rows_seen == 16  # they really shared the passes
    assert together == alone
    assert len({t for t, _, _ in alone}) > 3  # the steering changed the texts


@pytest.mark.parametrize("positions", ["all", "completion", "prompt"])
def test_the_engine_gives_generates_text(setup: dict[str, Any], positions: str) -> None:
    model, tok, a = setup["model"], setup["tok"], setup["a"]
    queries = [p.query for p in random_pairs(4, seed=3)]
    want = generate_detailed(model, tok, queries, delta=a, m=2.5, positions=positions,  # type: ignore[arg-type]
                             max_new_tokens=8)  # fmt: skip
    engine = Engine(model, tok).start()
    try:
        jobs = [
            engine.submit(Job(ids(tok, q), (SteerSpec("a", a, 2.5, positions),), max_tokens=8))  # type: ignore[arg-type]
            for q in queries
        ]
        got = run(engine, jobs)
    finally:
        engine.stop()
    assert [t.strip() for t, _, _ in got] == [g.text for g in want]
    assert [n for _, _, n in got] == [len(g.token_ids) - g.finished for g in want]


def test_m_zero_and_no_steering_give_the_same_tokens(setup: dict[str, Any]) -> None:
    tok, a = setup["tok"], setup["a"]
    engine = Engine(setup["model"], tok).start()
    seen: list[list[int]] = []
    try:
        for steering in ((), (SteerSpec("a", a, 0.0),)):
            job = engine.submit(Job(ids(tok, "good system"), steering, max_tokens=10))
            tokens: list[int] = []
            collect(job, timeout=60, on_token=lambda t, into=tokens: into.append(t.token_id))
            seen.append(tokens)
    finally:
        engine.stop()
    assert seen[0] == seen[1]


def test_a_cancelled_request_leaves_and_the_others_finish(setup: dict[str, Any]) -> None:
    tok = setup["tok"]
    engine = Engine(setup["model"], tok).start()
    try:
        long = [Job(ids(tok, f"word {i}"), max_tokens=40) for i in range(3)]
        started = threading.Event()
        first = long[0]
        for j in long:
            engine.submit(j)
        first_event = first.events.get(timeout=60)
        started.set()
        first.cancel()
        ends = []
        while True:
            event = first.events.get(timeout=60)
            if isinstance(event, Finished):
                ends.append(event)
                break
        others = run(engine, long[1:])
    finally:
        engine.stop()
    assert first_event is not None and ends[0].reason == "cancelled"
    assert [r for _, r, _ in others] in (["length", "length"], ["stop", "length"],
                                         ["length", "stop"], ["stop", "stop"])  # fmt: skip
    assert engine.active == 0


def test_stop_strings_end_the_text_before_them(setup: dict[str, Any]) -> None:
    tok = setup["tok"]
    steering = (SteerSpec("a", setup["a"], 3.0),)  # long answers on the tiny model
    engine = Engine(setup["model"], tok).start()
    try:
        prompt = ids(tok, "good system")
        plain, _ = collect(engine.submit(Job(prompt, steering, max_tokens=12)), timeout=60)
        words = plain.split()
        assert len(words) >= 3, plain
        stop = " " + words[1]
        text, end = collect(
            engine.submit(Job(prompt, steering, max_tokens=12, stop=(stop,))), timeout=60
        )
    finally:
        engine.stop()
    assert end.reason == "stop" and text == plain[: plain.find(stop)]


def test_sampling_follows_the_requests_seed_not_the_batch(setup: dict[str, Any]) -> None:
    tok = setup["tok"]
    engine = Engine(setup["model"], tok).start()

    def job(seed: int) -> Job:
        return Job(ids(tok, "good system"), max_tokens=10, temperature=1.0, seed=seed)

    try:
        alone = run(engine, [engine.submit(job(5))])
        crowd = run(engine, [engine.submit(job(s)) for s in (1, 5, 2, 3)])
    finally:
        engine.stop()
    assert crowd[1] == alone[0]
    assert len({c[0] for c in crowd}) > 1


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=5), st.data())
def test_joined_rows_kept_again_are_the_rows_alone(lengths: list[int], data: st.DataObject) -> None:
    """BatchCache.join then .keep gives back each row's own keys, values and mask."""
    gen = torch.Generator().manual_seed(sum(lengths))

    def single(n: int) -> BatchCache:
        kv = [(torch.randn(1, 2, n, 3, generator=gen), torch.randn(1, 2, n, 3, generator=gen))
              for _ in range(2)]  # fmt: skip
        return BatchCache.single(DynamicCache(kv), n)

    rows = [single(n) for n in lengths]
    batch = rows[0]
    for r in rows[1:]:
        batch = batch.join(r)
    assert batch.width == max(lengths) and batch.lengths.tolist() == lengths
    i = data.draw(st.integers(0, len(lengths) - 1))
    kept = batch.keep([i])
    assert kept.width == lengths[i] and bool(kept.mask.all())
    for got, want in zip(kept.cache.layers, rows[i].cache.layers, strict=True):
        assert torch.equal(got.keys, want.keys) and torch.equal(got.values, want.values)


def test_a_steering_set_steers_like_its_members_together(setup: dict[str, Any]) -> None:
    from unisteer.core.steering_set import SteeringSet

    tok, a, b = setup["tok"], setup["a"], setup["b"]
    both = SteeringSet([a, b])
    engine = Engine(setup["model"], tok).start()
    try:
        prompt = ids(tok, "good system sea")
        as_set = collect(engine.submit(Job(prompt, (SteerSpec("s", both, 1.5),), 10)), 60)
        apart = collect(
            engine.submit(Job(prompt, (SteerSpec("a", a, 1.5), SteerSpec("b", b, 1.5)), 10)), 60
        )
        plain = collect(engine.submit(Job(prompt, (), 10)), 60)
    finally:
        engine.stop()
    assert as_set[0] == apart[0] and as_set[1].completion_tokens == apart[1].completion_tokens
    assert as_set[0] != plain[0]


def test_a_failing_request_ends_alone_with_its_error(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = setup["tok"]
    engine = Engine(setup["model"], tok)
    real = engine._prefill

    def fragile(row: Any) -> Any:
        if len(row.job.prompt) == 3:
            raise RuntimeError("boom")
        return real(row)

    monkeypatch.setattr(engine, "_prefill", fragile)
    engine.start()
    try:
        bad = engine.submit(Job([1, 2, 3], max_tokens=4))
        good = engine.submit(Job(ids(tok, "good"), max_tokens=4))
        _, end_bad = collect(bad, timeout=60)
        _, end_good = collect(good, timeout=60)
    finally:
        engine.stop()
    assert end_bad.reason == "error" and "boom" in (end_bad.error or "")
    assert end_good.reason in ("stop", "length")
