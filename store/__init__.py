"""Persistent state of edgecert: tables, the storage seam, encryption of keys at rest.

The names below are imported on first use (module ``__getattr__``): importing a light submodule such as
:mod:`store.crypto` or :mod:`store.readonly` (the TLS edge's workers) does not pull in the ORM and alembic."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .crypto import DecryptionError, KeyBox, load_keybox
    from .database import make_engine, migrate
    from .models import DomainStatus, utcnow
    from .protocol import Conflict, LockTimeout, NotFound, Storage
    from .sql import SQLStorage

__all__ = ["Storage", "SQLStorage", "NotFound", "Conflict", "LockTimeout", "KeyBox", "DecryptionError",
           "load_keybox", "make_engine", "migrate", "DomainStatus", "utcnow", "open_storage"]

_WHERE = {"KeyBox": "crypto", "DecryptionError": "crypto", "load_keybox": "crypto", "make_engine": "database",
          "migrate": "database", "DomainStatus": "models", "utcnow": "models", "Storage": "protocol",
          "SQLStorage": "sql", "NotFound": "protocol", "Conflict": "protocol", "LockTimeout": "protocol"}


def __getattr__(name: str):
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def open_storage(url: str) -> SQLStorage:
    """Engine + migrations + storage for ``url``: the one call the service makes at start."""
    from .database import make_engine, migrate
    from .sql import SQLStorage
    engine = make_engine(url)
    migrate(engine)
    return SQLStorage(engine)
