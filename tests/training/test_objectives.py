"""Every objective against its equation, computed by hand in float64 on a fixed tiny batch."""

from __future__ import annotations

import math

import pytest
import torch

from unisteer import Delta
from unisteer.training.objectives import SFT, SPLIT, RePS, Rows, Scores, reps_loss, split_loss
from unisteer.training.objectives.rows import NEG, POS

# Two pairs. Summed log-probabilities of each completion under steering, token counts, and
# the unsteered log-probabilities (A_p, A_n) of each pair.
LOGP = {  # (pair, side, direction) -> summed log p under the delta
    (0, POS, +1): -6.0,
    (0, NEG, +1): -9.0,
    (1, POS, +1): -4.0,
    (1, NEG, +1): -3.5,
    (0, POS, -1): -8.0,
    (0, NEG, -1): -5.0,
    (1, POS, -1): -2.0,
    (1, NEG, -1): -7.0,
}
TOKENS = {(0, POS): 3, (0, NEG): 4, (1, POS): 2, (1, NEG): 5}
SEQ = {(0, POS): 10, (0, NEG): 11, (1, POS): 8, (1, NEG): 11}
REF = {(0, POS): -7.0, (0, NEG): -6.5, (1, POS): -3.0, (1, NEG): -6.0}


def scores_for(
    keys: list[tuple[int, int, int]], m: list[float], null: list[bool]
) -> tuple[Rows, Scores]:
    rows = Rows(
        torch.tensor([k[0] for k in keys]),
        torch.tensor([k[1] for k in keys]),
        torch.tensor(m, dtype=torch.float32),
        torch.tensor(null),
    )
    scores = Scores(
        logp=torch.tensor([LOGP[k] for k in keys], dtype=torch.float64),
        tokens=torch.tensor([TOKENS[k[:2]] for k in keys]),
        seq_tokens=torch.tensor([SEQ[k[:2]] for k in keys]),
        ref_logp=torch.tensor(
            [[REF[(0, POS)], REF[(0, NEG)]], [REF[(1, POS)], REF[(1, NEG)]]], dtype=torch.float64
        ),
    )
    return rows, scores


def mean_nll(pair: int, side: int, direction: int) -> float:
    return -LOGP[(pair, side, direction)] / TOKENS[(pair, side)]


def test_split_loss_elementwise_formula() -> None:
    lt, lo = torch.tensor([1.0, 2.0, 0.3]), torch.tensor([1.2, 4.0, 0.1])
    got = split_loss(lt, lo, lambda_p=1.0, lambda_n=0.5, gamma=5.0, theta=0.5)
    want = [
        1.0 + 0.5 * 1.2 + 5.0 * max(0.0, 0.5 - (1.2 - 1.0)),
        2.0 + 0.5 * 4.0 + 0.0,
        0.3 + 0.5 * 0.1 + 5.0 * (0.5 - (0.1 - 0.3)),
    ]
    assert got.tolist() == pytest.approx(want, abs=1e-6)


def test_split_pair_form_swaps_roles_for_negative_m() -> None:
    keys = [(0, POS, 1), (1, POS, 1), (0, NEG, 1), (1, NEG, 1)]
    keys += [(0, POS, -1), (1, POS, -1), (0, NEG, -1), (1, NEG, -1)]
    m = [4.0, 2.0, 4.0, 2.0, -6.0, -8.0, -6.0, -8.0]
    rows, scores = scores_for(keys, m, [False] * 8)
    lam_p, lam_n, gamma, theta = 1.0, 0.3, 3.5, 0.6
    loss = SPLIT(lambda_p=lam_p, lambda_n=lam_n, gamma=gamma, theta=theta).loss(rows, scores)
    terms = []
    for pair in (0, 1):
        lp, ln = mean_nll(pair, POS, 1), mean_nll(pair, NEG, 1)  # +m: A_p is the target
        terms.append(lam_p * lp + lam_n * ln + gamma * max(0.0, theta - (ln - lp)))
        lp, ln = mean_nll(pair, POS, -1), mean_nll(pair, NEG, -1)  # -m: A_n is the target
        terms.append(lam_p * ln + lam_n * lp + gamma * max(0.0, theta - (lp - ln)))
    assert float(loss) == pytest.approx(sum(terms) / 4, rel=1e-12)


def test_split_minibatch_form_pools_tokens_and_hinges_the_means() -> None:
    keys = [(0, POS, 1), (1, POS, 1), (0, NEG, 1), (1, NEG, 1)]
    keys += [(0, POS, -1), (1, POS, -1), (0, NEG, -1), (1, NEG, -1)]
    m = [4.0, 2.0, 6.0, 8.0, -6.0, -8.0, -10.0, -2.0]
    rows, scores = scores_for(keys, m, [False] * 8)
    loss = SPLIT(form="minibatch").loss(rows, scores)
    target = [(0, POS, 1), (1, POS, 1), (0, NEG, -1), (1, NEG, -1)]
    other = [(0, NEG, 1), (1, NEG, 1), (0, POS, -1), (1, POS, -1)]
    lt = -sum(LOGP[k] for k in target) / sum(TOKENS[k[:2]] for k in target)
    lo = -sum(LOGP[k] for k in other) / sum(TOKENS[k[:2]] for k in other)
    want = 1.0 * lt + 0.5 * lo + 5.0 * max(0.0, 0.5 - (lo - lt))
    assert float(loss) == pytest.approx(want, rel=1e-12)


def test_split_rows_share_m_in_pair_form_and_not_in_minibatch_form() -> None:
    def draws():  # type: ignore[no-untyped-def]
        values = iter([torch.tensor([2.0, 4.0]), torch.tensor([6.0, 8.0])] * 2)
        return lambda n: next(values)

    rows = SPLIT(bidirectional=False).rows(2, draws(), "vector")
    assert rows.m.tolist() == [2.0, 4.0, 2.0, 4.0] and rows.side.tolist() == [0, 0, 1, 1]
    rows = SPLIT(bidirectional=False, form="minibatch").rows(2, draws(), "vector")
    assert rows.m.tolist() == [2.0, 4.0, 6.0, 8.0]
    rows = SPLIT().rows(2, draws(), "lora")
    assert (rows.m[4:] < 0).all() and (rows.m[:4] > 0).all()


def test_sft_bidirectional_targets() -> None:
    values = iter([torch.tensor([2.0, 4.0]), torch.tensor([6.0, 8.0])])
    rows = SFT().rows(2, lambda n: next(values), "vector")
    assert rows.side.tolist() == [POS, POS, NEG, NEG]
    assert rows.m.tolist() == [2.0, 4.0, -6.0, -8.0]
    keys = [(0, POS, 1), (1, POS, 1), (0, NEG, -1), (1, NEG, -1)]
    r, scores = scores_for(keys, rows.m.tolist(), [False] * 4)
    want = sum(mean_nll(*k) for k in keys) / 4
    assert float(SFT().loss(r, scores)) == pytest.approx(want, rel=1e-12)
    assert len(SFT(bidirectional=False).rows(2, lambda n: torch.ones(n), "vector")) == 2


def hand_reps(normalizer: str) -> float:
    length = TOKENS if normalizer == "completion" else SEQ

    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    total = 0.0
    for pair in (0, 1):
        beta_plus = max(REF[(pair, NEG)] - REF[(pair, POS)], 1.0)
        beta_minus = max(REF[(pair, POS)] - REF[(pair, NEG)], 1.0)
        d_plus = (
            beta_plus * LOGP[(pair, POS, 1)] / length[(pair, POS)]
            - LOGP[(pair, NEG, 1)] / length[(pair, NEG)]
        )
        # The "-1" entries stand for the null intervention here.
        d_minus = (
            beta_minus * LOGP[(pair, NEG, -1)] / length[(pair, NEG)]
            - LOGP[(pair, POS, -1)] / length[(pair, POS)]
        )
        total += -log_sigmoid(d_plus) - log_sigmoid(d_minus)
    return total / 2


@pytest.mark.parametrize("normalizer", ["completion", "sequence"])
def test_reps_matches_equation(normalizer: str) -> None:
    keys = [(0, POS, 1), (1, POS, 1), (0, NEG, 1), (1, NEG, 1)]
    keys += [(0, POS, -1), (1, POS, -1), (0, NEG, -1), (1, NEG, -1)]
    rows, scores = scores_for(keys, [3.0, 5.0, 3.0, 5.0, 0, 0, 0, 0], [False] * 4 + [True] * 4)
    got = RePS(normalizer=normalizer).loss(rows, scores)  # type: ignore[arg-type]
    assert float(got) == pytest.approx(hand_reps(normalizer), rel=1e-12)


def test_reps_rows_use_null_for_vectors_and_minus_m_otherwise() -> None:
    values = iter([torch.tensor([2.0, 4.0]), torch.tensor([6.0, 8.0])])
    rows = RePS().rows(2, lambda n: next(values), "vector")
    assert rows.null.tolist() == [False] * 4 + [True] * 4
    assert rows.m.tolist() == [2.0, 4.0, 2.0, 4.0, 0.0, 0.0, 0.0, 0.0]
    values = iter([torch.tensor([2.0, 4.0]), torch.tensor([6.0, 8.0])])
    rows = RePS().rows(2, lambda n: next(values), "lora")
    assert not rows.null.any()
    assert rows.m.tolist() == [2.0, 4.0, 2.0, 4.0, -6.0, -8.0, -6.0, -8.0]


def test_reps_beta_clamps_at_one() -> None:
    one = torch.tensor([0.0], dtype=torch.float64)
    # Unsteered model already prefers A_p by 5 nats: β⁺ = max(-5, 1) = 1.
    got = reps_loss(one - 2, one - 4, one - 3, one - 1, one - 1, one - 6, one + 2, one + 2)
    d_plus = 1.0 * (-2 / 2) - (-4 / 2)
    d_minus = 5.0 * (-1 / 2) - (-3 / 2)
    want = math.log1p(math.exp(-d_plus)) + math.log1p(math.exp(-d_minus))
    assert float(got[0]) == pytest.approx(want, rel=1e-12)


def test_null_intervention_removes_positive_projection_only() -> None:
    d = Delta.vector(2, site="x")
    with torch.no_grad():
        d.bias_.copy_(torch.tensor([2.0, 0.0]))
    y = torch.tensor([[3.0, 4.0], [-2.0, 1.0]])
    out = y + d.null(y)
    assert out.tolist() == [[0.0, 4.0], [-2.0, 1.0]]
    with pytest.raises(ValueError, match="vector deltas"):
        Delta.lora(2, 2, 1, site="x").null(y)
