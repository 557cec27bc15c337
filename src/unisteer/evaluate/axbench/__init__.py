"""The AxBench steering evaluation (Wu et al. 2025), from concept data to a report.

* :mod:`~unisteer.evaluate.axbench.concepts` — the concept data (concept list, training and
  detection rows) and :func:`~unisteer.evaluate.axbench.concepts.resolve_concept`.
* :mod:`~unisteer.evaluate.axbench.protocol` — the protocol as pure functions on tables
  (instruction sampling, factor grid, harmonic mean, factor selection, winrate).
* :mod:`~unisteer.evaluate.axbench.store` — the evaluation directory on disk (Parquet parts
  written atomically) and the deltas it reads.
* :mod:`~unisteer.evaluate.axbench.run` — running the protocol: generate, rate, select,
  report, resumable at every step; :func:`~unisteer.evaluate.axbench.run.rescore` rates stored
  generations with another judge.
* :mod:`~unisteer.evaluate.axbench.job` — what ``unisteer eval axbench`` calls
  (:func:`~unisteer.evaluate.axbench.job.eval_axbench`: concept data and saved deltas in).
"""
