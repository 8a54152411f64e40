"""One tree for every error imgsearch raises on purpose.

Each kind says what went wrong in one line and how the front ends report it: the CLI maps
:attr:`ImgsearchError.exit_code` (in ``cli.py``, one place), the web server
:attr:`ImgsearchError.http_status` (in ``serve/app.py``, one place). Anything else that escapes is a
bug and is shown as such.

    ImgsearchError                     (alias: LibraryError, the name of the first release)
    ├── UserError                      bad input: a missing folder, an empty query, a bad option   exit 1 / 400
    │   └── NotFoundError              no such photo (by id or path)                               exit 1 / 404
    ├── ModelError                     a model or its weights cannot be loaded or run              exit 1 / 503
    ├── StoreError                     the library file cannot be used (not a library, locked...)  exit 1 / 503
    └── DecodeError                    one photo cannot be read (recorded against that photo)      exit 1 / 422
"""
from __future__ import annotations


class ImgsearchError(Exception):
    """Base of every imgsearch error: the message is one line meant for the user."""

    exit_code = 1
    http_status = 500


class UserError(ImgsearchError):
    """The request cannot be done as asked: a missing folder, an empty query, a bad option."""

    http_status = 400


class NotFoundError(UserError):
    """No such photo (by id or path)."""

    http_status = 404


class ModelError(ImgsearchError):
    """A model or its weights cannot be loaded or run (missing package, damaged file, no such device)."""

    http_status = 503


class StoreError(ImgsearchError):
    """The library file cannot be used (not a database, not a library, too new, unwritable, busy...)."""

    http_status = 503


class DecodeError(ImgsearchError):
    """A photo cannot be decoded: the reason is recorded against that photo, the run goes on.
    ``str(e)`` / ``e.reason`` is a short human reason; ``e.detail`` the underlying library message, if any."""

    http_status = 422

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.reason, self.detail))


LibraryError = ImgsearchError
"""The first release's name for imgsearch's errors; ``except LibraryError`` still catches all of them."""
