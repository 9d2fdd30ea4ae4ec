"""Errors a caller can act on. Each says what failed, on which input, and what to do."""


class DropflowError(Exception):
    """Base of every error dropflow raises on purpose."""


class InvalidName(DropflowError, ValueError):
    """A model name or version that does not match the documented pattern."""


class ConfigError(DropflowError):
    """A missing or malformed configuration variable (names the variable)."""


class UserInputError(DropflowError):
    """Bad data or spec from a data owner: the job fails and is not retried."""


class ConcurrentUpdate(DropflowError):
    """A compare-and-set kept losing to other writers."""


class NotFoundError(DropflowError, LookupError):
    """Something the caller named does not exist."""


class NotReadyError(DropflowError):
    """The thing exists but cannot answer yet (e.g. a model with no champion)."""

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def brief(exc: BaseException, limit: int = 300) -> str:
    """The exception's message on one line, at most `limit` characters (its type's name when it
    has none): for a reason recorded or answered to a user."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
