"""Private keys at rest: AES-256-GCM with a key from ``EDGECERT_SECRET_KEY`` or a 0600 key file.

Blob format: ``b"EC1" || nonce(12) || ciphertext+tag``; the associated data binds a blob to its purpose
(e.g. ``b"cert-key:shop.example.com"``) so a blob copied to another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.exceptions import InvalidTag

__all__ = ["KeyBox", "DecryptionError", "load_keybox"]

_MAGIC = b"EC1"


class DecryptionError(Exception):
    """A blob could not be decrypted: wrong secret key, wrong purpose, or corrupted data."""


class KeyBox:
    """Encrypts and decrypts small secrets (private keys) with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("KeyBox needs a 32-byte key")
        self._aead = AESGCM(key)
        self.key_id = HKDF(algorithm=hashes.SHA256(), length=4, salt=None, info=b"edgecert key id").derive(key).hex()
        self._derive_root = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                                 info=b"edgecert derived keys").derive(key)

    def derive_key(self, purpose: bytes) -> bytes:
        """A 32-byte key for ``purpose`` (e.g. HMAC of ownership records), derived from the secret key: the same on
        every node sharing the secret, independent of the encryption key."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(self._derive_root)

    def __repr__(self) -> str:  # never show the key
        return f"KeyBox(key_id={self.key_id})"

    def encrypt(self, plaintext: bytes, *, purpose: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return _MAGIC + nonce + self._aead.encrypt(nonce, plaintext, purpose)

    def decrypt(self, blob: bytes, *, purpose: bytes) -> bytes:
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 12 + 16:
            raise DecryptionError("not an edgecert encrypted blob")
        nonce = blob[3:15]
        try:
            return self._aead.decrypt(nonce, blob[15:], purpose)
        except InvalidTag:
            raise DecryptionError("decryption failed: wrong EDGECERT_SECRET_KEY or corrupted data") from None


def _key_from_string(value: str) -> bytes:
    value = value.strip()
    for decode in (lambda v: base64.urlsafe_b64decode(v + "=" * (-len(v) % 4)), bytes.fromhex):
        try:
            raw = decode(value)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            return raw
    if len(value) < 16:
        raise ValueError("EDGECERT_SECRET_KEY is too short: use 32 random bytes in base64 "
                         "(python -c 'import secrets,base64;print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())')")
    # A passphrase: stretch it deterministically (same passphrase, same key on every node).
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"edgecert-secret-key-v1",
                info=b"aes-256-gcm").derive(value.encode())


def load_keybox(*, secret_key: str | None, state_dir: Path,
                create: Callable[[Path, bytes], None] | None = None) -> KeyBox:
    """The process's KeyBox: from the configured secret, else from ``state_dir/secret.key`` (created 0600).

    ``create(path, data)`` writes a new key file whole or not at all and only if none exists (``FileExistsError``
    otherwise): the service passes its atomic writer (``edge.lifecycle.files.atomic_write(exclusive=True)``), so a
    full disk at first start never leaves a cut key file. Without it, the file is created with ``O_EXCL``.

    Raises:
        ValueError: a configured secret is unusable, or the key file is readable by others.
        OSError: the key file could not be written (nothing is left of it).
    """
    if secret_key:
        return KeyBox(_key_from_string(secret_key))
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "secret.key"
    new = (base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n").encode()
    try:
        if create is not None:
            create(path, new)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(new)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ValueError(f"{path} is readable by others (mode {mode:o}); chmod 600 it") from None
    return KeyBox(_key_from_string(path.read_text()))
    with os.fdopen(fd, "w") as f:
        f.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n")
    return KeyBox(_key_from_string(path.read_text()))
