"""Certificate files for other servers, swapped atomically.

Layout under ``EDGECERT_STATE_DIR``::

    archive/<hostname>/<version>/{cert,chain,fullchain,privkey,haproxy}.pem   (written once, never modified)
    live/<hostname> -> ../archive/<hostname>/<version>               (a symlink, flipped by rename(2))

Every version is written completely (and fsynced) in its own directory before the ``live`` symlink is replaced
with one same-filesystem ``rename``; a reader that resolves ``live/<hostname>`` once (``realpath`` or an opened
directory fd) always sees a matching certificate and key. (A reader that opens ``fullchain.pem`` and then
``privkey.pem`` by their full paths can straddle a flip; resolve the link once, as servers do at reload.) Old versions are kept for a while, so a reader that
straddles a flip still reads whole files, and then pruned.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from pathlib import Path

__all__ = ["LiveFiles"]

_SAFE = re.compile(r"^[a-z0-9*._-]+$")


class LiveFiles:
    def __init__(self, state_dir: Path, *, keep_versions: int = 3) -> None:
        self.root = Path(state_dir)
        self.live = self.root / "live"
        self.archive = self.root / "archive"
        self.keep = max(2, keep_versions)
        for d in (self.live, self.archive):
            d.mkdir(parents=True, exist_ok=True)

    def _check(self, hostname: str) -> str:
        if not _SAFE.match(hostname) or hostname.startswith(".") or ".." in hostname:
            raise ValueError(f"unsafe hostname for a path: {hostname!r}")
        return hostname

    @staticmethod
    def _write(path: Path, data: bytes, mode: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def install(self, hostname: str, *, cert_pem: bytes, chain_pem: bytes, key_pem: bytes, serial: str) -> Path:
        """Write a new version and flip ``live/<hostname>`` to it. Returns the live directory path."""
        h = self._check(hostname)
        version = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + serial[:16]
        adir = self.archive / h / version
        adir.mkdir(parents=True, mode=0o755)
        fullchain = cert_pem.rstrip(b"\n") + b"\n" + (chain_pem.rstrip(b"\n") + b"\n" if chain_pem.strip() else b"")
        self._write(adir / "cert.pem", cert_pem, 0o644)
        self._write(adir / "chain.pem", chain_pem, 0o644)
        self._write(adir / "fullchain.pem", fullchain, 0o644)
        self._write(adir / "privkey.pem", key_pem, 0o600)
        self._write(adir / "haproxy.pem", fullchain + key_pem, 0o600)  # HAProxy wants one file
        dfd = os.open(adir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        link = self.live / h
        tmp = self.live / f".{h}.{os.getpid()}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.path.join("..", "archive", h, version), tmp)
        if link.exists() and not link.is_symlink():
            shutil.rmtree(link)  # a plain directory left by an older layout
        os.replace(tmp, link)
        lfd = os.open(self.live, os.O_RDONLY)
        try:
            os.fsync(lfd)
        finally:
            os.close(lfd)
        self._prune(h, current=version)
        return link

    def _prune(self, hostname: str, *, current: str) -> None:
        versions = sorted(p.name for p in (self.archive / hostname).iterdir() if p.is_dir())
        for old in versions[:-self.keep]:
            if old != current:
                shutil.rmtree(self.archive / hostname / old, ignore_errors=True)

    def remove(self, hostname: str) -> None:
        h = self._check(hostname)
        link = self.live / h
        if link.is_symlink() or link.exists():
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
        shutil.rmtree(self.archive / h, ignore_errors=True)

    def current_version(self, hostname: str) -> str | None:
        link = self.live / self._check(hostname)
        return os.readlink(link).rsplit("/", 1)[-1] if link.is_symlink() else None

    def paths(self, hostname: str) -> dict[str, str]:
        d = self.live / self._check(hostname)
        return {k: str(d / f"{k}.pem") for k in ("fullchain", "privkey", "cert", "chain")}
