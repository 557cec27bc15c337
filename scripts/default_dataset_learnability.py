"""Is the default dataset learnable? A hand-rolled DiffMean check on the default model.

For each concept: a DiffMean vector at the residual output of the middle block (mean over
train pairs of the mean completion-token activation for A_p minus that for A_n), then on the
test split the summed completion NLLs L_p, L_n under steering at a grid of m, and

    PrefOdds = L_n - L_p,   UtilOdds = log P_u - log(1 - P_u),   P_u = e^-L_p + e^-L_n.

The grid is symmetric in units of the DiffMean vector up to 3 x (median residual norm / |v|).
It reports the largest PrefOdds gain over m = 0 among multipliers whose mean UtilOdds dropped
by less than 1 nat. (The library's fast sweep arrives later; this loop is the naive way.)

    python scripts/default_dataset_learnability.py [--layer L] [--points 13]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import unisteer
from unisteer.data import collate, default_split, encode_pair
from unisteer.data.tokens import pad_id


def site_activations(model, batch, site):  # type: ignore[no-untyped-def]
    grabbed = {}
    block = model.get_submodule(site)

    def grab(module, args, output):  # type: ignore[no-untyped-def]
        grabbed["h"] = output[0] if isinstance(output, tuple) else output

    handle = block.register_forward_hook(grab)
    try:
        with torch.no_grad():
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        handle.remove()
    return grabbed["h"]


def completion_nll(model, batch):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = batch.input_ids[:, 1:]
    token_lp = logp.gather(-1, target[..., None])[..., 0]
    mask = batch.completion_mask[:, 1:]
    return -(token_lp * mask).sum(-1)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x <= 0, stable."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--points", type=int, default=13)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    model, tok = unisteer.load_model()
    n_layers = len(unisteer.find_blocks(model)[1])
    layer = n_layers // 2 if args.layer is None else args.layer
    pid = pad_id(tok)
    for concept in unisteer.data.DEFAULT_CONCEPTS:
        t0 = time.time()
        train, test = default_split(concept)
        delta = unisteer.new_delta(model, "vector", layer, tokenizer=tok)
        diffs, norms = [], []
        for start in range(0, len(train), args.batch):
            chunk = train[start : start + args.batch]
            enc = [e for p in chunk for e in encode_pair(tok, p)]
            batch = collate(enc, pid)
            h = site_activations(model, batch, delta.site)
            m = batch.completion_mask.float()[..., None]
            means = (h * m).sum(1) / m.sum(1)
            diffs.append(means[0::2] - means[1::2])
            norms.append(h[batch.attention_mask.bool()].norm(dim=-1))
        v = torch.cat(diffs).mean(0)
        h_norm = float(torch.cat(norms).median())
        with torch.no_grad():
            delta.bias_.copy_(v)
        top = 3.0 * h_norm / float(v.norm())
        grid = torch.linspace(-top, top, args.points).tolist()
        if 0.0 not in grid:
            grid = sorted([*grid, 0.0])
        enc = [e for p in test for e in encode_pair(tok, p)]
        rows = []
        for m in grid:
            losses = []
            for start in range(0, len(enc), 2 * args.batch):
                batch = collate(enc[start : start + 2 * args.batch], pid)
                with unisteer.steer(model, delta, m=m):
                    losses.append(completion_nll(model, batch))
            loss = torch.cat(losses).double()
            lp, ln = loss[0::2], loss[1::2]
            pref = ln - lp
            log_pu = torch.logaddexp(-lp, -ln)
            util = log_pu - log1mexp(log_pu)
            rows.append((m, float(pref.mean()), float(util.mean())))
        base = next(r for r in rows if r[0] == 0.0)
        print(
            f"\n{concept}: layer {layer}, |v| = {float(v.norm()):.2f}, median |h| = {h_norm:.1f}, "
            f"grid +-{top:.2f} ({time.time() - t0:.0f} s)"
        )
        print(f"{'m':>8} {'m|v|/|h|':>9} {'PrefOdds':>9} {'UtilOdds':>9} {'dPref':>7} {'dUtil':>7}")
        for m, pref, util in rows:
            print(
                f"{m:8.2f} {m * float(v.norm()) / h_norm:9.2f} {pref:9.2f} {util:9.2f} "
                f"{pref - base[1]:7.2f} {util - base[2]:7.2f}"
            )
        ok = [r for r in rows if base[2] - r[2] < 1.0]
        best = max(ok, key=lambda r: r[1] - base[1])
        print(
            f"RESULT {concept} best_pref_gain {best[1] - base[1]:.2f} at m = {best[0]:.2f} "
            f"(util drop {base[2] - best[2]:.2f})"
        )


if __name__ == "__main__":
    main()
