"""Every file edgecert writes into its state dir goes through one atomic writer (:func:`atomic_write`), and the
certificate files for other servers are swapped atomically (:class:`LiveFiles`).

:func:`atomic_write`: the bytes go into a temporary file next to the target (every byte: short writes are
continued, a write that makes no progress is an error), the file is fsynced, renamed over the target and the
directory fsynced. On any error the temporary file is removed, the target is untouched, and a
:class:`StateWriteError` (an ``OSError`` keeping the ``errno``: ``ENOSPC``, ``EIO``, ``EDQUOT``, ``EFBIG`` ...,
with the path and how many bytes were written) is raised.

Layout under ``EDGECERT_STATE_DIR``::

    archive/<hostname>/<version>/{cert,chain,fullchain,privkey,haproxy}.pem   (written once, never modified)
    archive/<hostname>/.partial-<pid>-<version>/                       (a version being written; never served)
    live/<hostname> -> ../archive/<hostname>/<version>               (a symlink, flipped by rename(2))

A version is written completely (each file through :func:`atomic_write`) in a ``.partial-`` directory, which is
renamed to its final name only once every file is on disk (:meth:`LiveFiles.stage`); then the ``live`` symlink is
replaced with one same-filesystem ``rename`` (:meth:`LiveFiles.activate`). A reader that resolves
``live/<hostname>`` once (``realpath`` or an opened directory fd) always sees a matching certificate and key. (A
reader that opens ``fullchain.pem`` and then ``privkey.pem`` by their full paths can straddle a flip; resolve the
link once, as servers do at reload.) Old versions are kept for a while, so a reader that straddles a flip still
reads whole files, and then pruned. A version that could not be written completely is removed at once; one left by
a process that died while writing is removed at the next start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno as errno_mod
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Callable

__all__ = ["LiveFiles", "StateWriteError", "atomic_write", "fsync_dir"]

_SAFE = re.compile(r"^[a-z0-9*._-]+$")
_PARTIAL = ".partial-"


class StateWriteError(OSError):
    """A file of the state dir could not be written (nothing changed in place). ``errno`` is the system's
    (``ENOSPC``: the disk is full; ``EIO``: the disk failed; ...); ``filename`` the target; ``written`` of
    ``expected`` bytes had reached the temporary file."""

    def __init__(self, err: int | None, strerror: str, filename: str, *, written: int = 0, expected: int = 0) -> None:
        super().__init__(err, strerror, filename)
        self.written, self.expected = written, expected

    @property
    def errno_name(self) -> str:
        return errno_mod.errorcode.get(self.errno or 0, "unknown")

    def reason(self) -> str:
        """Plain words (no path: it goes to the log and the event data, not to tenants)."""
        what = {errno_mod.ENOSPC: "the disk of the state dir is full",
                errno_mod.EDQUOT: "the disk quota of the state dir is exhausted",
                errno_mod.EIO: "the disk of the state dir reported an I/O error",
                errno_mod.EFBIG: "the file size limit was reached",
                errno_mod.EROFS: "the state dir is read-only",
                errno_mod.EACCES: "no permission to write in the state dir"}.get(self.errno or 0,
                                                                                 self.strerror or "write failed")
        return f"{what} ({self.errno_name})"


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory (its entries: a rename into it is durable once this returns)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes, *, mode: int = 0o644, exclusive: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring). ``exclusive``: only
    create it (``link(2)`` instead of ``rename(2)``), for files that must never be replaced once written (the
    secret key: two processes starting at once must not each keep a different one).

    Raises:
        FileExistsError: ``exclusive`` and ``path`` exists (it is untouched).
        StateWriteError: the target is unchanged and no temporary file is left.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    written = 0
    created = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        created = True
        try:
            view = memoryview(data)
            while written < len(view):  # continue after short writes; the next write reports the errno
                n = os.write(fd, view[written:])
                if n <= 0:  # no progress and no errno: never loop forever
                    raise OSError(errno_mod.EIO, "write made no progress")
                written += n
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)  # FileExistsError when someone else created it first
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
        created = False
        fsync_dir(path.parent)
    except OSError as e:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, FileExistsError) and exclusive:
            raise
        raise StateWriteError(e.errno, f"{e.strerror or e} ({written} of {len(data)} bytes written)", str(path),
                              written=written, expected=len(data)) from e


class LiveFiles:
    """The ``archive``/``live`` tree. ``on_error(err)`` is called with every :class:`StateWriteError` raised
    through :meth:`write`, :meth:`stage` and :meth:`activate` (the app counts them in a metric)."""

    def __init__(self, state_dir: Path, *, keep_versions: int = 3,
                 on_error: Callable[[StateWriteError], None] | None = None) -> None:
        self.root = Path(state_dir)
        self.live = self.root / "live"
        self.archive = self.root / "archive"
        self.keep = max(2, keep_versions)
        self.on_error = on_error
        for d in (self.live, self.archive):
            d.mkdir(parents=True, exist_ok=True)
        self.remove_partials()

    def _check(self, hostname: str) -> str:
        if not _SAFE.match(hostname) or hostname.startswith(".") or ".." in hostname:
            raise ValueError(f"unsafe hostname for a path: {hostname!r}")
        return hostname

    def _failed(self, e: OSError, path: str | os.PathLike) -> StateWriteError:
        err = e if isinstance(e, StateWriteError) else StateWriteError(e.errno, e.strerror or str(e), str(path))
        if self.on_error is not None:
            with contextlib.suppress(Exception):
                self.on_error(err)
        return err

    def write(self, path: str | os.PathLike, data: bytes, *, mode: int = 0o644) -> None:
        """:func:`atomic_write`, counted through ``on_error`` when it fails."""
        try:
            atomic_write(path, data, mode=mode)
        except OSError as e:
            raise self._failed(e, path) from e

    def stage(self, hostname: str, *, cert_pem: bytes, chain_pem: bytes, key_pem: bytes, serial: str) -> str:
        """Write a complete new version into the archive (not live yet); returns its name. On failure nothing is
        left of it and :class:`StateWriteError` is raised."""
        h = self._check(hostname)
        version = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + serial[:16]
        hdir = self.archive / h
        partial = hdir / f"{_PARTIAL}{os.getpid()}-{version}"
        fullchain = cert_pem.rstrip(b"\n") + b"\n" + (chain_pem.rstrip(b"\n") + b"\n" if chain_pem.strip() else b"")
        try:
            hdir.mkdir(parents=True, exist_ok=True, mode=0o755)
            partial.mkdir(mode=0o755)
            atomic_write(partial / "cert.pem", cert_pem, mode=0o644)
            atomic_write(partial / "chain.pem", chain_pem, mode=0o644)
            atomic_write(partial / "fullchain.pem", fullchain, mode=0o644)
            atomic_write(partial / "privkey.pem", key_pem, mode=0o600)
            atomic_write(partial / "haproxy.pem", fullchain + key_pem, mode=0o600)  # HAProxy wants one file
            os.rename(partial, hdir / version)
            fsync_dir(hdir)
        except OSError as e:
            shutil.rmtree(partial, ignore_errors=True)
            raise self._failed(e, partial) from e
        return version

    def activate(self, hostname: str, version: str) -> Path:
        """Flip ``live/<hostname>`` to an archived ``version`` (one rename); returns the live path."""
        h = self._check(hostname)
        link = self.live / h
        tmp = self.live / f".{h}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            os.symlink(os.path.join("..", "archive", h, version), tmp)
            try:
                if link.exists() and not link.is_symlink():
                    shutil.rmtree(link)  # a plain directory left by an older layout
                os.replace(tmp, link)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            fsync_dir(self.live)
        except OSError as e:
            raise self._failed(e, link) from e
        self._prune(h, current=version)
        return link

    def discard(self, hostname: str, version: str) -> None:
        """Remove a staged version that will not go live (never the current one)."""
        h = self._check(hostname)
        if version and version != self.current_version(h) and "/" not in version:
            shutil.rmtree(self.archive / h / version, ignore_errors=True)

    def install(self, hostname: str, *, cert_pem: bytes, chain_pem: bytes, key_pem: bytes, serial: str) -> Path:
        """Write a new version and flip ``live/<hostname>`` to it. Returns the live directory path."""
        version = self.stage(hostname, cert_pem=cert_pem, chain_pem=chain_pem, key_pem=key_pem, serial=serial)
        try:
            return self.activate(hostname, version)
        except OSError:
            self.discard(hostname, version)
            raise

    def _prune(self, hostname: str, *, current: str) -> None:
        versions = sorted(p.name for p in (self.archive / hostname).iterdir()
                          if p.is_dir() and not p.name.startswith("."))
        for old in versions[:-self.keep]:
            if old != current:
                shutil.rmtree(self.archive / hostname / old, ignore_errors=True)

    def remove_partials(self) -> int:
        """Remove versions left half-written by processes that are gone (a crash while writing); returns how many."""
        n = 0
        for hdir in self.archive.iterdir() if self.archive.is_dir() else ():
            if not hdir.is_dir():
                continue
            for p in hdir.iterdir():
                if not p.name.startswith(_PARTIAL):
                    continue
                pid = p.name[len(_PARTIAL):].split("-", 1)[0]
                if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                    continue  # another live process is writing it
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        for p in self.live.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_symlink():
                pid = p.name.rsplit(".", 3)[-3] if p.name.count(".") >= 3 else ""
                if not (pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid))):
                    with contextlib.suppress(OSError):
                        p.unlink()
        return n

    def remove(self, hostname: str) -> bool:
        """Delete ``live/<hostname>`` and its archive; True when there was something to delete. The live link goes
        first (readers stop finding the name), then the versions. Raises ``OSError`` when the live entry cannot be
        deleted."""
        h = self._check(hostname)
        link = self.live / h
        existed = link.is_symlink() or link.exists()
        if existed:
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
            fsync_dir(self.live)
        archive = self.archive / h
        existed = existed or archive.exists()
        shutil.rmtree(archive, ignore_errors=True)
        return existed

    def current_version(self, hostname: str) -> str | None:
        link = self.live / self._check(hostname)
        return os.readlink(link).rsplit("/", 1)[-1] if link.is_symlink() else None

    def paths(self, hostname: str) -> dict[str, str]:
        d = self.live / self._check(hostname)
        return {k: str(d / f"{k}.pem") for k in ("fullchain", "privkey", "cert", "chain")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
