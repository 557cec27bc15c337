"""Models: loading the default model and any Hugging Face causal LM (:mod:`.load`), and every
probe of a model's configuration (:mod:`.config`)."""
