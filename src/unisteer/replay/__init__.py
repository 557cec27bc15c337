"""The multiplier-batched replay engine: blocks L..N re-run on recorded inputs for many m.

* :mod:`.recorder` — one ordinary forward pass recording block inputs, calls and the head;
* :mod:`.base` — the :class:`~.base.Runner` protocol (``capture`` / ``run``);
* :mod:`.stacked`, :mod:`.prefix` — the two runners;
* :mod:`.check` — the one exactness check at m = 0 before a runner is trusted;
* :mod:`.logprob` — token log-probabilities and per-row sums.
"""
