"""Tessera's exceptions, raised alike by the embedded engine and the server client.

Every error is a :class:`TesseraError`; the subclass says what kind of
failure it is. The embedded engine's errors map onto them one to one (see
``python/src/lib.rs``, ``error_class``), and so do the server's error codes
(``tessera.client``).

============================  ======================================================
class                         raised for
============================  ======================================================
InvalidInputError             bad input: wrong dimension, NaN/Inf, empty tensor, bad
                              dtype or shape, duplicate or non-string ids, unknown
                              option, a limit exceeded (also a ``ValueError``)
NotFoundError                 unknown collection (also a ``LookupError``)
AlreadyExistsError            a collection of that name exists (with another
                              configuration, for open_or_create_collection)
CorruptionError               a file failed its checksum or structure check, or has
                              a format version this build does not read
TesseraIOError                the file system failed (also an ``OSError``)
UnavailableError              the database is closed, open in another process, or a
                              collection refuses writes after a failed write; the
                              server is shutting down
DeadlineExceededError         a search ran past its ``timeout_ms`` and was stopped
                              (also a ``TimeoutError``)
AuthenticationError           the server refused the API key (also a ``PermissionError``)
============================  ======================================================
"""

from __future__ import annotations

from typing import Optional


class TesseraError(Exception):
    """Base class of every Tessera error.

    ``code`` is the server's error code when the error came from a server
    (``bad_request``, ``not_found``, …), ``limit`` the name of the server
    limit that was exceeded, if one was.
    """

    def __init__(self, message: str, code: Optional[str] = None, limit: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.limit = limit


class InvalidInputError(TesseraError, ValueError):
    """The input was refused; nothing was written."""


class NotFoundError(TesseraError, LookupError):
    """No collection of that name."""

    def __str__(self) -> str:  # LookupError/KeyError would quote the message
        return self.message


class AlreadyExistsError(TesseraError):
    """A collection of that name exists already."""


class CorruptionError(TesseraError):
    """A file failed verification, or has a format version this build cannot read."""


class TesseraIOError(TesseraError, OSError):
    """The file system failed."""

    def __str__(self) -> str:
        return self.message


class UnavailableError(TesseraError):
    """The database or server cannot take the call now (closed, locked, shutting down)."""


class DeadlineExceededError(TesseraError, TimeoutError):
    """A search ran past its deadline (``timeout_ms``) and was stopped."""

    def __str__(self) -> str:
        return self.message


class AuthenticationError(TesseraError, PermissionError):
    """The server refused the API key (missing, unknown, or read-only for a write)."""

    def __str__(self) -> str:
        return self.message


__all__ = [
    "TesseraError",
    "InvalidInputError",
    "NotFoundError",
    "AlreadyExistsError",
    "CorruptionError",
    "TesseraIOError",
    "UnavailableError",
    "DeadlineExceededError",
    "AuthenticationError",
]
