"""Checkpoint formats and integrations: how weights come in and embedders go out.

checkpoint.py (strict loading of Hugging Face directories), gguf.py (the default model, converted
once from a GGUF file), peft.py (LoRA adapters in PEFT's layout), export.py and st_module.py (a
saved embedder as a sentence-transformers directory, and the modules that load it).
"""
