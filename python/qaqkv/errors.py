"""Errors raised by qaqkv: one class per status code, all under `qaqkv.Error`.

Every failure of the service or of the local codec arrives as the subclass of
its code, with the server's (or the library's) message kept as it was::

    try:
        client.resume_session("chat-42", k, v)
    except qaqkv.NotFound:
        ...  # evicted or never stored: recompute the prefix

`InvalidArgument` is also a `ValueError` and `DeadlineExceeded` a
`TimeoutError`, so code that already catches those keeps working.
"""

from __future__ import annotations


class Error(Exception):
    """A qaqkv call failed. `code` is the status code's name (e.g. "NOT_FOUND"),
    `message` the message, which names the offending field for bad input."""

    code: str = "UNKNOWN"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Cancelled(Error):
    """The call was cancelled."""

    code = "CANCELLED"


class Unknown(Error):
    """An error of no other code."""

    code = "UNKNOWN"


class InvalidArgument(Error, ValueError):
    """A request field is wrong; the message names it. Nothing was stored."""

    code = "INVALID_ARGUMENT"


class DeadlineExceeded(Error, TimeoutError):
    """The call's deadline passed."""

    code = "DEADLINE_EXCEEDED"


class NotFound(Error):
    """Unknown, expired or evicted block or session."""

    code = "NOT_FOUND"


class AlreadyExists(Error):
    """The object (for example a pending transfer offer) exists already."""

    code = "ALREADY_EXISTS"


class PermissionDenied(Error):
    """The token does not allow the call."""

    code = "PERMISSION_DENIED"


class ResourceExhausted(Error):
    """A quota, a budget or a size limit was reached."""

    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(Error):
    """What the server stored disagrees with the request (geometry, codec)."""

    code = "FAILED_PRECONDITION"


class Aborted(Error):
    """The call was aborted, typically by a concurrent change."""

    code = "ABORTED"


class OutOfRange(Error):
    """A value past the end of what exists."""

    code = "OUT_OF_RANGE"


class Unimplemented(Error):
    """The server or this build does not implement the call."""

    code = "UNIMPLEMENTED"


class Internal(Error):
    """The server broke the protocol or an invariant."""

    code = "INTERNAL"


class Unavailable(Error):
    """The server could not be reached (after the client's retries) or is draining."""

    code = "UNAVAILABLE"


class DataLoss(Error):
    """A page failed its checksum or does not decode."""

    code = "DATA_LOSS"


class Unauthenticated(Error):
    """No valid token was presented."""

    code = "UNAUTHENTICATED"


_BY_CODE = {
    cls.code: cls
    for cls in (Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
                PermissionDenied, ResourceExhausted, FailedPrecondition, Aborted, OutOfRange,
                Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated)
}


def error_class(code: str) -> type[Error]:
    """The class of a status code name ("NOT_FOUND" -> NotFound); Unknown for
    names it does not know."""
    return _BY_CODE.get(code, Unknown)


__all__ = ["Error", "error_class"] + [cls.__name__ for cls in _BY_CODE.values()]
