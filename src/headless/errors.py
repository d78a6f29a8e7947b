"""The one exception type users see.

Anything raised as `HeadlessError` is a problem with the user's input (a missing file, a bad config
value, a tokenizer that does not fit the model...).  The CLI prints its message as a single line
and exits with status 2; everything else is a bug and keeps its traceback.
"""


class HeadlessError(Exception):
    """A user-facing error with a one-line, actionable message."""


def load_error(err: BaseException) -> str:
    """One line for a model or tokenizer that transformers refused to load.  Two refusals are
    deliberate and say so: custom code (every load passes trust_remote_code=False) and a pickle
    that is more than tensors (torch.load(weights_only=True); its own text advises
    weights_only=False, which would run the file's code)."""
    import pickle

    if isinstance(err, pickle.UnpicklingError):
        return ("its weights file is a pickle that holds more than tensors; headless loads weights only "
                "(safetensors, or torch.load(weights_only=True)) and never unpickles code")
    text = str(err).strip()
    if "custom code" in text or "trust_remote_code" in text:
        return ("it needs its own Python code (auto_map / modeling_*.py), and headless never runs a model's "
                "code (trust_remote_code=False)")
    return text.splitlines()[0] if text else type(err).__name__
