"""Deltas in and out of the programs users run models in: llama.cpp / repeng control vectors
(:mod:`.gguf`), PEFT LoRA adapters (:mod:`.peft`), merged Hugging Face checkpoints
(:mod:`.merged`) and steering-vectors' ``SteeringVector`` (:mod:`.steering_vectors`)."""
