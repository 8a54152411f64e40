"""One tree for every error imgsearch raises on purpose.

Each kind says what went wrong in one line and how the front ends report it: the CLI maps
:attr:`ImgsearchError.exit_code` (in ``cli/common.py``, one place), the web server
:attr:`ImgsearchError.http_status` (in ``serve/app.py``, one place). Anything else that escapes is a
bug and is shown as such.

    ImgsearchError                     (alias: LibraryError, the name of the first release)
    ├── UserError                      bad input: a missing folder, an empty query, a bad option   exit 1 / 400
    │   └── NotFoundError              no such photo (by id or path)                               exit 1 / 404
    ├── ModelError                     a model or its weights cannot be loaded or run              exit 1 / 503
    ├── StoreError                     the library file cannot be used (not a library, locked...)  exit 1 / 503
    │   └── ReadOnlyError              a write asked of a read-only library ("searching only")       exit 1 / 503
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


class ReadOnlyError(StoreError):
    """A write (an index run, a schema upgrade) asked of a library opened read-only."""


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


def storage_error(e: BaseException, path=None) -> StoreError | None:
    """The :class:`StoreError` (one line) for a failure of the disk or the database file under the library —
    no space left (SQLite's "database or disk is full", ``OSError`` ENOSPC), a damaged file ("database disk
    image is malformed", "file is not a database"), a read-only medium — or None when ``e`` is something else.
    Takes sqlite3 errors and SQLAlchemy's wrappers of them (their ``.orig``); the front ends map with it."""
    import errno
    import sqlite3

    orig = getattr(e, "orig", None)
    err = orig if isinstance(orig, BaseException) else e
    where = f" ({path})" if path is not None else ""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        name = f" ({err.filename})" if err.filename else where
        return StoreError(f"no space left on the device{name}: free some space and run the same command again "
                          "(what was finished is kept)")
    if isinstance(err, OSError) and err.errno == errno.EROFS:
        return StoreError(f"the library is on a read-only file system{where}")
    if not isinstance(err, sqlite3.Error):
        return None
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    low = msg.lower()
    if "disk is full" in low:
        return StoreError(f"no space left on the device{where}: free some space and run the same command again "
                          "(what was finished is kept)")
    if "malformed" in low or "not a database" in low or "disk i/o error" in low:
        return StoreError(f"the library database is damaged{where}: {msg}. Restore library.db from a backup, "
                          "or move it away and index the folders again")
    if "readonly database" in low or "read-only" in low:
        return ReadOnlyError(f"read-only library: searching only{where}")
    return StoreError(f"the library database failed{where}: {msg}")
"""The first release's name for imgsearch's errors; ``except LibraryError`` still catches all of them."""


class Terminated(KeyboardInterrupt):
    """Not an error but a stop: SIGTERM during a long command (cli.sigterm_as_interrupt), unwound like Ctrl-C
    (the batch in flight rolls back, the run is recorded as interrupted, DataLoader workers stop), then exit
    143 (128 + SIGTERM). A KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""
