"""Bridges to other training stacks (imported only when used): `headless.integrations.hf` for the
Hugging Face `Trainer` and `accelerate`."""
