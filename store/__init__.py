"""Persistent state of edgecert: tables, the storage seam, encryption of keys at rest."""

from .crypto import DecryptionError, KeyBox, load_keybox
from .database import make_engine, migrate
from .models import DomainStatus, utcnow
from .protocol import Conflict, LockTimeout, NotFound, Storage
from .sql import SQLStorage

__all__ = ["Storage", "SQLStorage", "NotFound", "Conflict", "LockTimeout", "KeyBox", "DecryptionError",
           "load_keybox", "make_engine", "migrate", "DomainStatus", "utcnow", "open_storage"]


def open_storage(url: str) -> SQLStorage:
    """Engine + migrations + storage for ``url``: the one call the service makes at start."""
    engine = make_engine(url)
    migrate(engine)
    return SQLStorage(engine)
