"""Errors a user can cause. The CLI prints them as one line and exits non-zero; tracebacks are for bugs."""


class UserError(Exception):
    """A problem with input the user controls (a path, a config value, a file); one-line message."""


class ConfigError(UserError):
    """A config value or override that cannot be used."""


class DataError(UserError):
    """The dataset is missing or unusable."""


class ImageError(UserError):
    """One image file cannot be decoded. kind: empty | not_image | corrupt | too_large | missing."""

    def __init__(self, message: str, kind: str = "corrupt"):
        super().__init__(message)
        self.kind = kind

    @property
    def reason(self) -> str:
        """The message without its leading '<file>: ' (for tables that already show the file)."""
        return str(self).split(": ", 1)[-1]


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error (or its type name): what a one-line message quotes."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0]


def one_line(message: object) -> str:
    """A message's whitespace, newlines included, folded into single spaces."""
    return " ".join(str(message).split())


def last_line(text: str | None) -> str:
    """The last non-empty line of a message (a traceback's is the exception itself)."""
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""
