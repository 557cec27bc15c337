"""Judges: what rates a steered generation 0, 1 or 2 on concept, instruction and fluency.

* :mod:`~unisteer.evaluate.judges.base` — the interface every judge implements
  (:class:`~unisteer.evaluate.judges.base.Judge`) and the prompt-reading base class;
  :mod:`~unisteer.evaluate.judges.prompts` — the three rating prompts and their parser.
* Language-model judges: :mod:`~unisteer.evaluate.judges.http` (any OpenAI-compatible
  endpoint, answers cached on disk by :mod:`~unisteer.evaluate.judges.disk_cache`) and
  :mod:`~unisteer.evaluate.judges.local` (a local Hugging Face model).
* The offline proxy judge, :mod:`~unisteer.evaluate.judges.proxy` (its scores are named
  ``proxy_*``), built from :mod:`~unisteer.evaluate.judges.proxy_concept`,
  :mod:`~unisteer.evaluate.judges.embeddings`, :mod:`~unisteer.evaluate.judges.perplexity`,
  :mod:`~unisteer.evaluate.judges.text_stats` and
  :mod:`~unisteer.evaluate.judges.calibration`.
* :func:`~unisteer.evaluate.judges.select.make_judge` — a judge by name, as the command line
  picks it.

The public names are exported by :mod:`unisteer.evaluate`; heavy pieces (scikit-learn,
embeddings, HTTP) load only when a judge that needs them is built.
"""
