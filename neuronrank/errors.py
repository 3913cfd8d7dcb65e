"""One exception type for everything a user can get wrong.

The CLI turns it into a single `error: ...` line and exit code 2; the app shows its message.
Anything else escaping is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input: an unknown model, a text that is too short, a parameter out of range."""
