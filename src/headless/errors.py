"""The one exception type users see.

Anything raised as `HeadlessError` is a problem with the user's input (a missing file, a bad config
value, a tokenizer that does not fit the model...).  The CLI prints its message as a single line
and exits with status 2; everything else is a bug and keeps its traceback.
"""


class HeadlessError(Exception):
    """A user-facing error with a one-line, actionable message."""
