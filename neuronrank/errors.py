"""One exception type for everything a user can get wrong.

The CLI turns it into a single `error: ...` line and exit code 2; the app shows its message.
Anything else escaping is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input: an unknown model, a text that is too short, a parameter out of range."""


class Terminated(BaseException):
    """SIGTERM arrived (a timeout, a container stop, Cancel in the app): like Ctrl-C, a BaseException so
    that no `except Exception` swallows it; the run ends as cancelled."""

    def __init__(self, signum: int = 15):
        super().__init__("terminated by SIGTERM")
        self.signum = signum


def raise_on_sigterm() -> None:
    """Turn SIGTERM into Terminated in this process (main thread only)."""
    import signal

    def on_term(signum, frame):
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, on_term)
