"""Continuous batching of steered generation: every request its own deltas and multipliers,
all active requests in one forward pass per decoding step.

One thread owns the model. Between steps it admits waiting requests (each prefilled alone,
then merged into the batch's KV cache: :mod:`unisteer.model.kv`) and drops the finished and
the cancelled ones. A step feeds every row its last token; each delta active in the batch is
hooked once with a ``[rows]`` multiplier that is the row's ``m`` where the row asked for that
delta and 0 elsewhere (``m = 0`` leaves a row's outputs bit for bit unchanged,
:func:`unisteer.core.steer.steer`), so unsteered and differently steered requests share the
pass.

Positions follow :func:`unisteer.generation.generate`: the prefill is the prompt (``"all"``
and ``"prompt"`` steer it), the decoding steps are the completion (``"all"`` and
``"completion"`` steer them). Greedy decoding takes the argmax; sampling draws from the
request's own generator (:class:`unisteer.generation.RowSampler`), so a request's text does
not depend on the others in the batch (up to the rounding of batched matrix products, which
could in principle flip a near-tie).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache

from unisteer.core.delta import Delta
from unisteer.core.positions import PositionMode
from unisteer.core.steer import steer
from unisteer.core.steering_set import Steerable, deltas_of
from unisteer.generation import RowSampler, eos_ids
from unisteer.model.config import cache_keyword
from unisteer.model.kv import BatchCache, mergeable
from unisteer.model.memory import model_device

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class SteerSpec:
    """One steering of a request: ``m`` times ``steerable`` at ``positions``."""

    name: str
    steerable: Steerable
    m: float
    positions: PositionMode = "all"


@dataclass(frozen=True)
class Token:
    """New text of a request (``text`` may be empty while a character is incomplete)."""

    text: str
    token_id: int


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


Event = Token | Finished


class EngineBusy(Exception):
    """The waiting queue is full (the server answers 429)."""


@dataclass
class Job:
    """One request: its prompt's token ids, its steering and how to decode. Events (``Token``,
    then one ``Finished``) arrive on ``events``; ``cancel()`` stops it at the next step."""

    prompt: list[int]
    steering: tuple[SteerSpec, ...] = ()
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Row:
    job: Job
    generated: list[int] = field(default_factory=list)
    sent: str = ""  # the text already sent as Token events
    next_token: int = -1  # sampled, not yet fed to the model
    sampler: RowSampler | None = None
    finished: bool = False


def _steering(
    rows: list[_Row], phase: Literal["prefill", "decode"]
) -> tuple[list[Delta], list[Tensor]]:
    """The deltas active in this pass and their ``[rows]`` multipliers (0 where a row did not
    ask for the delta or its positions exclude this phase)."""
    wanted = ("all", "prompt") if phase == "prefill" else ("all", "completion")
    deltas: list[Delta] = []
    columns: dict[int, int] = {}
    values: list[list[float]] = []
    for r, row in enumerate(rows):
        for spec in row.job.steering:
            if spec.positions not in wanted or spec.m == 0.0:
                continue
            for d in deltas_of(spec.steerable):
                k = columns.get(id(d))
                if k is None:
                    k = columns[id(d)] = len(deltas)
                    deltas.append(d)
                    values.append([0.0] * len(rows))
                values[k][r] += spec.m
    return deltas, [torch.tensor(v, dtype=torch.float32) for v in values]


class Engine:
    """Serves :class:`Job` s on ``model`` (see the module docstring). ``max_batch`` rows decode
    together; at most ``max_waiting`` jobs wait for a row (:meth:`submit` raises
    :class:`EngineBusy` beyond that)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch: int = 16,
        max_waiting: int = 64,
        eos: set[int] | None = None,
    ) -> None:
        if max_batch < 1 or max_waiting < 0:
            raise ValueError("max_batch must be at least 1 and max_waiting at least 0")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.eos = eos if eos is not None else eos_ids(model, tokenizer)
        self.device = model_device(model)
        self.cache_kw = cache_keyword(model)
        self._waiting: queue.Queue[Job] = queue.Queue(maxsize=max_waiting)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows: list[_Row] = []
        self._batch: BatchCache | None = None
        self.merging = True  # False once a cache turned out not to be mergeable
        self.steps = 0
        self.max_rows_seen = 0
        self.ended: Counter[str] = Counter()  # finish reasons so far

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="unisteer-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, job: Job) -> Job:
        try:
            self._waiting.put_nowait(job)
        except queue.Full:
            raise EngineBusy(f"{self.max_waiting} requests are already waiting") from None
        self._wake.set()
        return job

    @property
    def active(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return self._waiting.qsize()

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._rows and self._waiting.empty():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                self._admit()
                if self._rows:
                    self._decode()
                self._retire()
            except Exception as e:  # a failed pass fails its rows, never the server
                log.exception("a generation step failed")
                for row in self._rows:
                    self._finish(row, "error", f"{type(e).__name__}: {e}")
                self._rows, self._batch = [], None

    def _admit(self) -> None:
        limit = self.max_batch if self.merging else 1
        while len(self._rows) < limit:
            try:
                job = self._waiting.get_nowait()
            except queue.Empty:
                return
            if job.cancelled.is_set():
                self.ended["cancelled"] += 1
                job.events.put(Finished("cancelled", len(job.prompt), 0))
                continue
            row = _Row(job)
            if job.temperature > 0:
                row.sampler = RowSampler([job.seed], job.temperature, job.top_p)
            try:
                cache, logits = self._prefill(row)
            except Exception as e:  # this request's prefill failed: it alone ends, with why
                log.exception("a prefill failed")
                self._finish(row, "error", f"{type(e).__name__}: {e}")
                continue
            if self._emit(row, self._pick(row, logits)):
                continue  # done after one token: it never joins the batch
            single = BatchCache.single(cache, len(job.prompt))
            if self._batch is None:
                self._batch = single
            elif mergeable(cache) and mergeable(self._batch.cache):
                self._batch = self._batch.join(single)
            else:  # cannot merge: serve the batch out first, this row waits for it
                self.merging = False
                log.warning("this model's KV cache cannot be merged; serving one request at a time")
                self._run_alone(row, single)
                continue
            self._rows.append(row)
            self.max_rows_seen = max(self.max_rows_seen, len(self._rows))
            limit = self.max_batch if self.merging else 1

    def _prefill(self, row: _Row) -> tuple[DynamicCache, Tensor]:
        ids = torch.tensor([row.job.prompt], dtype=torch.long, device=self.device)
        cache = DynamicCache(config=self.model.config)  # as model.generate makes it
        deltas, ms = _steering([row], "prefill")
        with torch.no_grad(), steer(self.model, deltas, m=ms) if deltas else nullcontext():
            out = self.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                use_cache=True,
                **{self.cache_kw: cache},  # filled in place
            )
        return cache, out.logits[:, -1]

    def _decode(self) -> None:
        batch = self._batch
        assert batch is not None
        ids = torch.tensor([[r.next_token] for r in self._rows], device=self.device)
        mask = torch.cat([batch.mask, torch.ones_like(ids)], dim=1)
        deltas, ms = _steering(self._rows, "decode")
        with torch.no_grad(), steer(self.model, deltas, m=ms) if deltas else nullcontext():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=batch.lengths[:, None],
                cache_position=torch.tensor([batch.width], device=self.device),
                use_cache=True,
                **{self.cache_kw: batch.cache},  # grows in place
            )
        batch.grow()
        self.steps += 1
        logits = out.logits[:, -1]
        for r, row in enumerate(self._rows):
            self._emit(row, self._pick(row, logits[r : r + 1]))

    def _run_alone(self, row: _Row, single: BatchCache) -> None:
        """Decode ``row`` to its end by itself (a model whose cache cannot be merged)."""
        saved_rows, saved_batch = self._rows, self._batch
        self._rows, self._batch = [row], single
        try:
            while not self._done(row):
                self._decode()
        finally:
            self._rows, self._batch = saved_rows, saved_batch

    def _retire(self) -> None:
        keep = [i for i, row in enumerate(self._rows) if not self._done(row)]
        for i, row in enumerate(self._rows):
            if i not in keep and not row.finished:
                self._finish(row, "cancelled")
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        self._batch = self._batch.keep(keep) if keep and self._batch is not None else None

    # -- tokens -------------------------------------------------------------------------------

    def _pick(self, row: _Row, logits: Tensor) -> int:
        if row.sampler is None:
            return int(logits[0].argmax())
        scores = row.sampler(torch.empty(0), logits.float())
        return int(scores[0].argmax())

    def _done(self, row: _Row) -> bool:
        return row.finished or row.job.cancelled.is_set()

    def _emit(self, row: _Row, token: int) -> bool:
        """Record ``token`` for ``row``, send its text, and finish the row when it ended;
        whether it did."""
        job = row.job
        if job.cancelled.is_set():
            self._finish(row, "cancelled")
            return True
        if token in self.eos:
            self._finish(row, "stop")
            return True
        row.generated.append(token)
        row.next_token = token
        text = str(self.tokenizer.decode(row.generated, skip_special_tokens=True))
        stop_at = min((i for s in job.stop if (i := text.find(s)) >= 0), default=-1)
        if stop_at >= 0:
            self._send(row, text[:stop_at], token)
            self._finish(row, "stop")
            return True
        last = len(row.generated) >= job.max_tokens
        if last:
            text = text.rstrip("\ufffd")
        if text.endswith("\ufffd"):  # hold back an incomplete character
            text = row.sent
        self._send(row, text, token)
        if last:
            self._finish(row, "length")
        return last

    def _send(self, row: _Row, text: str, token: int) -> None:
        """One Token event per token: the new text, or "" (nothing printable yet)."""
        new = text[len(row.sent) :] if text.startswith(row.sent) else ""
        row.job.events.put(Token(new, token))
        row.sent += new

    def _finish(self, row: _Row, reason: FinishReason, error: str | None = None) -> None:
        if row.finished:
            return
        row.finished = True
        self.ended[reason] += 1
        row.job.events.put(Finished(reason, len(row.job.prompt), len(row.generated), error))


def collect(
    job: Job, timeout: float | None = None, on_token: Callable[[Token], None] | None = None
) -> tuple[str, Finished]:
    """Wait for ``job`` to finish: its whole text and its :class:`Finished` event."""
    parts: list[str] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        event = job.events.get(timeout=left)
        if isinstance(event, Finished):
            return "".join(parts), event
        parts.append(event.text)
        if on_token is not None:
            on_token(event)
