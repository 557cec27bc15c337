"""The recorder: one ordinary forward pass recording what a replay needs, and replaying blocks."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from unisteer.data import collate, encode_pair
from unisteer.replay.recorder import Recorder, expand_batch, row_group, select_rows

from tiny_models import ARCHS, tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer


@pytest.fixture
def tok() -> Any:
    return word_tokenizer(chat_template=CHATML)


def hooks_left(model: torch.nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_block_input_is_the_ordinary_pass_stopped_at_the_site(arch: str, tok: Any) -> None:
    """The sweep's shared work before the site is bit for bit what ``model(...)`` computes,
    and stopping the pass early leaves no hook behind."""
    model = tiny_model(arch)
    batch = collate([e for p in random_pairs(3) for e in encode_pair(tok, p)], 0)
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    rec = Recorder(model, 2)
    whole, _, _ = rec.forward(**inputs)
    stopped = rec.block_input(**inputs)
    assert torch.equal(whole, stopped)
    assert hooks_left(model) == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_replaying_recorded_blocks_gives_the_ordinary_logits(arch: str, tok: Any) -> None:
    """Blocks L..N run on the recorded input with the recorded arguments, then the recorded
    head, give the logits of ``model(...)`` (to float32 rounding), and every hook is gone."""
    model = tiny_model(arch)
    batch = collate([e for p in random_pairs(3) for e in encode_pair(tok, p)], 0)
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    rec = Recorder(model, 1)
    h, calls, logits = rec.forward(**inputs, use_cache=False)
    assert len(calls) == len(rec.blocks) - 1 and rec.head
    with torch.no_grad():
        last = rec.blocks_from(h, calls, batch.input_ids.shape[0])
        mask = batch.attention_mask.bool()
        targets = torch.zeros(int(mask.sum()), dtype=torch.long)
        replayed = rec.logprobs(last[mask], targets)
    reference = torch.log_softmax(logits.double(), -1)[mask][:, 0]
    assert torch.allclose(replayed, reference, atol=1e-4)
    assert hooks_left(model) == 0


def test_expand_and_select_touch_batch_shaped_tensors_only() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    other = torch.ones(5, 3)  # not batch-shaped: passes through
    args = (x, {"mask": x.clone(), "other": other, "n": 3}, [x])
    big = expand_batch(args, batch=2, times=3)
    assert big[0].shape == (6, 3) and torch.equal(big[0][4], x[0])  # row k*B + i = copy k of i
    assert big[1]["other"] is other and big[1]["n"] == 3
    assert torch.equal(big[2][0], big[0])
    picked = select_rows(args, batch=2, rows=torch.tensor([1, 1, 0]))
    assert torch.equal(picked[0], x[[1, 1, 0]]) and picked[1]["other"] is other


def test_per_row_tensors_of_any_grouping_are_expanded_and_selected_whole() -> None:
    """ALiBi reaches Bloom's blocks as ``[batch * heads, 1, T]``: each row owns ``heads``
    consecutive entries, and expansion and selection move them together."""
    batch, heads, t = 3, 4, 5
    alibi = torch.arange(batch * heads * t, dtype=torch.float32).reshape(batch * heads, 1, t)
    assert row_group(alibi, batch) == heads and row_group(torch.ones(5, 2), batch) is None
    big = expand_batch({"alibi": alibi}, batch, 2)["alibi"]
    assert big.shape == (2 * batch * heads, 1, t)
    # Row k * batch + i of the expanded batch owns copy k of row i's entries.
    grouped = big.reshape(2 * batch, heads, 1, t)
    assert torch.equal(grouped[batch + 1], alibi.reshape(batch, heads, 1, t)[1])
    picked = select_rows([alibi], batch, torch.tensor([2, 0, 2]))[0]
    assert torch.equal(picked.reshape(3, heads, 1, t), alibi.reshape(batch, heads, 1, t)[[2, 0, 2]])
