"""imgsearch/errors.py: every exception the package defines is an ImgsearchError, and each kind keeps its
exit code and HTTP status."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import imgsearch
from imgsearch import errors


def package_modules():
    for info in pkgutil.walk_packages(imgsearch.__path__, "imgsearch."):
        if ".migrations" in info.name:
            continue
        yield importlib.import_module(info.name)


def test_every_exception_class_of_the_package_is_in_the_tree():
    defined = {}
    for mod in package_modules():
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                defined[f"{mod.__name__}.{name}"] = obj
    assert len(defined) >= 14, sorted(defined)       # the tree itself, plus the model, indexer and serve errors
    outside = sorted(name for name, cls in defined.items() if not issubclass(cls, errors.ImgsearchError))
    assert outside == ["imgsearch.errors.Terminated"]      # a stop (SIGTERM), a KeyboardInterrupt by design
    assert issubclass(errors.Terminated, KeyboardInterrupt) and not issubclass(errors.Terminated, Exception)


@pytest.mark.parametrize("cls, exit_code, status", [
    (errors.UserError, 1, 400), (errors.NotFoundError, 1, 404), (errors.ModelError, 1, 503),
    (errors.StoreError, 1, 503), (errors.DecodeError, 1, 422),
])
def test_kinds_keep_their_exit_codes_and_statuses(cls, exit_code, status):
    e = cls("a reason")
    assert (e.exit_code, e.http_status, str(e)) == (exit_code, status, "a reason")
    assert isinstance(e, errors.ImgsearchError) and isinstance(e, imgsearch.LibraryError)


def test_the_first_release_name_still_catches_everything():
    from imgsearch.indexer.scan import RootNotFoundError
    from imgsearch.model.captioner import CheckpointError

    assert imgsearch.LibraryError is errors.ImgsearchError
    for e in (RootNotFoundError("/nowhere"), CheckpointError("bad file"), errors.DecodeError("truncated JPEG")):
        with pytest.raises(imgsearch.LibraryError):
            raise e
    assert isinstance(RootNotFoundError("/nowhere"), FileNotFoundError)   # code catching OSError keeps working


def test_decode_error_survives_a_worker_process_boundary():
    import pickle

    e = pickle.loads(pickle.dumps(errors.DecodeError("truncated JPEG", "OSError: image file is truncated")))
    assert (type(e), e.reason, e.detail) == (errors.DecodeError, "truncated JPEG", "OSError: image file is truncated")
