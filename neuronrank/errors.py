"""One exception type for everything a user can get wrong.

The CLI turns it into a single `error: ...` line and exit code 2; the app shows its message in the app's
words (`config.requests.app_message`). Anything else escaping is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input: an unknown model, a text that is too short, a parameter out of range.

    `field` names the request field the error concerns: the app names that field's widget by its declared
    label. `app` is the message in the app's words where the command line's own names a flag or reads
    otherwise; in it `{field}` stands for the widget's label. The CLI prints the message alone."""

    def __init__(self, message: str = "", field: str | None = None, app: str | None = None):
        super().__init__(message)
        self.field, self.app = field, app


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
