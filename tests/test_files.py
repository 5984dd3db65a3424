"""The one atomic writer of the state dir over a REAL full filesystem (a small tmpfs mounted for the test): a full
disk never puts a short or unsynced file in place, leaves no temporary file or partial version behind, keeps the
previous files whole and served, and says so (OSError with errno and path, a metric, a reason on the domain)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge.lifecycle.exports import write_exports
from edge.lifecycle.files import LiveFiles, StateWriteError, atomic_write
from tests.helpers import IN_CI, EdgeProcess, served_leaf
from tests.test_swap_e2e import LocalCA, _key_pem, _pem


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        msg = f"cannot mount a tmpfs for the full-disk tests (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def small_fs(tmp_path):
    """A real 256 KiB tmpfs: writes past its size fail with ENOSPC (after a short write), as on a full disk."""
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "256k")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(fs: Path, leave: int = 0) -> Path:
    """Fill ``fs`` up, then give back about ``leave`` bytes (rounded to pages by the file system)."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    total = os.fstat(fd).st_size
    try:
        while True:
            try:
                n = os.write(fd, b"\0" * 65536)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
            total += n
        os.ftruncate(fd, max(0, total - leave))
    finally:
        os.close(fd)
    return filler


def leftovers(root: Path) -> list[str]:
    """Temporary files and partial versions anywhere under ``root``."""
    return [str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".partial-")]


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_leaves_nothing(small_fs):
    target = small_fs / "data.txt"
    old = b"old content\n" * 100
    atomic_write(target, old)
    fill(small_fs, leave=8192)
    new = b"new content that does not fit\n" * 2000  # 60 kB
    with pytest.raises(OSError) as ei:
        atomic_write(target, new)
    e = ei.value
    assert isinstance(e, StateWriteError) and e.errno == errno.ENOSPC
    assert e.filename == str(target)
    assert 0 < e.written < len(new)  # the kernel took part of it (a short write), then refused: never renamed
    assert f"{e.written} of {len(new)} bytes" in str(e)
    assert target.read_bytes() == old
    assert leftovers(small_fs) == []
    assert sorted(p.name for p in small_fs.iterdir()) == ["data.txt", "filler"]


def test_a_write_that_fits_is_complete_even_on_a_nearly_full_disk(small_fs):
    fill(small_fs, leave=64 * 1024)
    data = os.urandom(40 * 1024)
    atomic_write(small_fs / "fits.bin", data, mode=0o600)
    assert (small_fs / "fits.bin").read_bytes() == data
    assert oct((small_fs / "fits.bin").stat().st_mode & 0o777) == "0o600"


def test_file_size_limit_efbig_is_reported_and_changes_nothing(tmp_path):
    """The kernel's other refusal: RLIMIT_FSIZE (a real limit, in a child process) gives a short write, then EFBIG."""
    import sys
    import textwrap
    target = tmp_path / "big.txt"
    target.write_bytes(b"old\n")
    code = textwrap.dedent(f"""
        import errno, resource, sys
        from edge.lifecycle.files import atomic_write
        resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))
        try:
            atomic_write({str(target)!r}, b"y" * 50000)
        except OSError as e:
            print(errno.errorcode[e.errno], e.written, e.expected, e.filename)
            sys.exit(0)
        sys.exit(1)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["EFBIG", "10000", "50000", str(target)]
    assert target.read_bytes() == b"old\n"
    assert leftovers(tmp_path) == []


def test_a_failing_fsync_puts_nothing_in_place(tmp_path):
    """Every byte is accepted into the page cache, then the disk cannot store it: ext4 on a loop device whose
    backing file sits on a full tmpfs (a real device failing at writeback). The fsync error (ENOSPC from the loop
    driver here; EIO on other devices) is reported and the file never replaces the old one."""
    import shutil
    for tool in ("losetup", "mkfs.ext4"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}") and not os.path.exists(f"/sbin/{tool}"):
            (pytest.fail if IN_CI else pytest.skip)(f"{tool} is needed for the loop-device test")
    back, mnt = tmp_path / "back", tmp_path / "ext4"
    _mount_tmpfs(back, "4m")
    loop = None
    try:
        subprocess.run(["truncate", "-s", "16M", str(back / "img")], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(back / "img")], check=True, capture_output=True)
        r = subprocess.run(["losetup", "-f", "--show", str(back / "img")], capture_output=True, text=True)
        if r.returncode != 0:
            (pytest.fail if IN_CI else pytest.skip)(f"no loop device: {r.stderr.strip()}")
        loop = r.stdout.strip()
        mnt.mkdir()
        subprocess.run(["mount", loop, str(mnt)], check=True, capture_output=True)
        target = mnt / "exports.conf"
        atomic_write(target, b"old whole file\n")
        fill(back, leave=0)  # the device's backing store is full: writeback will fail
        data = os.urandom(3 * 1024 * 1024)
        with pytest.raises(OSError) as ei:
            atomic_write(target, data)
        e = ei.value
        assert isinstance(e, StateWriteError) and e.errno in (errno.EIO, errno.ENOSPC)
        assert e.written == len(data)  # write(2) took every byte: only fsync could tell
        assert target.read_bytes() == b"old whole file\n"
        assert [p.name for p in mnt.iterdir() if p.name != "lost+found"] == ["exports.conf"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        if loop:
            subprocess.run(["losetup", "-d", loop], capture_output=True)
        subprocess.run(["umount", "-l", str(back)], capture_output=True)


def _leaf(ca: LocalCA, name: str) -> tuple[bytes, bytes, str]:
    cert, key = ca.leaf(name)
    return _pem(cert).encode(), _key_pem(key).encode(), format(cert.serial_number, "x")


def test_install_on_a_full_disk_keeps_the_live_pair_and_removes_the_partial_version(small_fs):
    errors: list[OSError] = []
    lf = LiveFiles(small_fs, on_error=errors.append)
    ca = LocalCA()
    h = "full.example.com"
    cert1, key1, serial1 = _leaf(ca, h)
    lf.install(h, cert_pem=cert1, chain_pem=_pem(ca.inter).encode(), key_pem=key1, serial=serial1)
    v1 = lf.current_version(h)
    fill(small_fs, leave=6000)  # room for a file or two of the version, not all five
    cert2, key2, serial2 = _leaf(ca, h)
    with pytest.raises(OSError) as ei:
        lf.install(h, cert_pem=cert2, chain_pem=_pem(ca.inter).encode(), key_pem=key2, serial=serial2)
    assert ei.value.errno == errno.ENOSPC and isinstance(ei.value, StateWriteError)
    assert [e.errno for e in errors] == [errno.ENOSPC]
    # Still the old, whole pair behind the live link; no partial version or temporary file anywhere.
    assert lf.current_version(h) == v1
    d = Path(os.path.realpath(small_fs / "live" / h))
    assert (d / "fullchain.pem").read_bytes().startswith(cert1)
    assert (d / "privkey.pem").read_bytes() == key1
    assert (d / "haproxy.pem").read_bytes().endswith(key1)
    assert [p.name for p in (small_fs / "archive" / h).iterdir()] == [v1]
    assert leftovers(small_fs) == []
    # Space again: the same certificate installs completely.
    (small_fs / "filler").unlink()
    lf.install(h, cert_pem=cert2, chain_pem=_pem(ca.inter).encode(), key_pem=key2, serial=serial2)
    d = Path(os.path.realpath(small_fs / "live" / h))
    assert (d / "cert.pem").read_bytes() == cert2 and (d / "privkey.pem").read_bytes() == key2


def test_a_partial_version_left_by_a_dead_process_is_removed_at_start(tmp_path):
    h = "crash.example.com"
    p = subprocess.Popen(["true"])  # a pid that is gone
    p.wait()
    part = tmp_path / "archive" / h / f".partial-{p.pid}-20260101T000000000000Z-abc"
    part.mkdir(parents=True)
    (part / "cert.pem").write_bytes(b"-----BEGIN CERT")
    link_tmp = tmp_path / "live" / f".{h}.{p.pid}.abcd1234.tmp"
    link_tmp.parent.mkdir(parents=True)
    os.symlink("../archive/x", link_tmp)
    LiveFiles(tmp_path)
    assert not part.exists() and not os.path.lexists(link_tmp)


def test_exports_on_a_full_disk_stay_whole(small_fs):
    lf = LiveFiles(small_fs)
    ca = LocalCA()
    few = [f"s{i}.example.com" for i in range(3)]
    for h in few:
        c, k, s = _leaf(ca, h)
        lf.install(h, cert_pem=c, chain_pem=b"", key_pem=k, serial=s)
    paths = write_exports(small_fs, few, write=lf.write)
    before = {k: p.read_bytes() for k, p in paths.items()}
    fill(small_fs, leave=20000)
    many = [f"tenant-{i:04d}.example.com" for i in range(600)]  # 600 server blocks: ~130 kB, does not fit
    with pytest.raises(OSError) as ei:
        write_exports(small_fs, few + many, include=many, write=lf.write)
    assert ei.value.errno == errno.ENOSPC and ei.value.filename == str(paths["nginx_servers"])
    after = {k: p.read_bytes() for k, p in paths.items()}
    assert after == before
    text = after["nginx_servers"].decode()
    assert text.endswith("}\n") and text.count("server {") == 3
    assert leftovers(small_fs) == []


def test_default_certificate_on_a_full_disk_is_never_half_written(small_fs):
    from edge.tls_edge.certificates import load_default_certificate
    fill(small_fs, leave=0)
    with pytest.raises(OSError) as ei:
        load_default_certificate(None, None, small_fs)
    assert ei.value.errno == errno.ENOSPC
    assert leftovers(small_fs) == []
    for f in (small_fs / "default").iterdir():  # whatever is there is whole (a key without a certificate is redone)
        assert f.read_bytes().rstrip().endswith(b"-----"), f
    (small_fs / "filler").unlink()
    cert, key = load_default_certificate(None, None, small_fs)
    assert (small_fs / "default" / "cert.pem").read_bytes() == cert
    assert oct((small_fs / "default" / "key.pem").stat().st_mode & 0o777) == "0o600"


def test_secret_key_on_a_full_disk_is_never_left_cut(small_fs):
    from store.crypto import load_keybox

    def create(p, data):
        atomic_write(p, data, mode=0o600, exclusive=True)
    fill(small_fs, leave=0)
    with pytest.raises(OSError) as ei:
        load_keybox(secret_key=None, state_dir=small_fs, create=create)
    assert ei.value.errno == errno.ENOSPC
    assert not (small_fs / "secret.key").exists() and leftovers(small_fs) == []
    (small_fs / "filler").unlink()
    kb = load_keybox(secret_key=None, state_dir=small_fs, create=create)
    first = (small_fs / "secret.key").read_bytes()
    assert oct((small_fs / "secret.key").stat().st_mode & 0o777) == "0o600"
    again = load_keybox(secret_key=None, state_dir=small_fs, create=create)  # exists: kept, never replaced
    assert (small_fs / "secret.key").read_bytes() == first
    blob = kb.encrypt(b"k", purpose=b"p")
    assert again.decrypt(blob, purpose=b"p") == b"k"
    with pytest.raises(FileExistsError):
        create(small_fs / "secret.key", b"other\n")
    assert (small_fs / "secret.key").read_bytes() == first and leftovers(small_fs) == []


# -- the swap ---------------------------------------------------------------------------------------------------------
class _Store:
    def __init__(self) -> None:
        self.fields: dict[str, dict] = {}

    async def update_domain(self, hostname, **fields):
        self.fields.setdefault(hostname, {}).update(fields)

    async def notify_change(self, hostname):
        pass


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []

    async def emit(self, hostname, kind, message, data=None):
        self.seen.append((hostname, kind, data or {}))


def _swapper(state: Path, files: LiveFiles):
    import types
    from edge.config import Settings
    from edge.lifecycle.swap import Swapper
    from edge.tls_edge.certificates import generate_default_certificate
    from edge.tls_edge.index import SniIndex
    dc, dk = generate_default_certificate()
    store, events = _Store(), _Events()

    async def update(domain, **fields):
        await store.update_domain(domain.hostname, **fields)
        return domain
    sw = Swapper(settings=Settings(state_dir=str(state), exports=True, nginx_site_include=""), storage=store,
                 index=SniIndex(default_fullchain=dc, default_key=dk), files=files, events=events,
                 hook=types.SimpleNamespace(enabled=False), update=update)
    return sw, store, events


def _version(ca: LocalCA, name: str, i: int):
    import datetime as dt
    import hashlib
    import json as _json
    from store.models import CertificateVersion, Domain
    cert, key = ca.leaf(name)
    pem = _pem(cert)
    now = dt.datetime.now(dt.timezone.utc)
    v = CertificateVersion(id=i, domain_id=i, names=_json.dumps([name]), serial=format(cert.serial_number, "x"),
                           not_before=now, not_after=cert.not_valid_after_utc, issuer="test",
                           sha256=hashlib.sha256(pem.encode()).hexdigest(), cert_pem=pem, chain_pem=_pem(ca.inter),
                           key_enc=b"", key_type="ecdsa-p256", source="upload")
    return Domain(id=i, hostname=name, tenant_id=1), v, _key_pem(key).encode()


async def test_concurrent_swaps_never_drop_a_name_from_the_exports(tmp_path):
    import asyncio
    files = LiveFiles(tmp_path)
    sw, _, _ = _swapper(tmp_path, files)
    ca = LocalCA()
    items = [_version(ca, f"c{i}.example.com", i) for i in range(1, 13)]
    await asyncio.gather(*(sw.go_live(d, v, k) for d, v, k in items))
    text = (tmp_path / "exports" / "nginx-servers.conf").read_text()
    assert [h for h in (d.hostname for d, _, _ in items) if f"server_name {h};" not in text] == []
    crt = (tmp_path / "exports" / "haproxy.crt-list").read_text()
    assert all(f" {d.hostname}\n" in crt for d, _, _ in items)


async def test_swap_on_a_full_disk_changes_nothing_served_and_says_why(small_fs):
    errors: list[OSError] = []
    files = LiveFiles(small_fs, on_error=errors.append)
    sw, store, events = _swapper(small_fs, files)
    ca = LocalCA()
    d, v1, k1 = _version(ca, "swap.example.com", 1)
    await sw.go_live(d, v1, k1)
    exports_before = (small_fs / "exports" / "nginx-servers.conf").read_bytes()
    live_before = os.path.realpath(small_fs / "live" / d.hostname)
    store.fields.clear()
    _, v2, k2 = _version(ca, "swap.example.com", 2)
    fill(small_fs, leave=0)
    with pytest.raises(OSError) as ei:
        await sw.go_live(d, v2, k2)
    assert ei.value.errno == errno.ENOSPC
    assert sw.index.get(d.hostname).serial == v1.serial  # memory: unchanged
    assert os.path.realpath(small_fs / "live" / d.hostname) == live_before  # disk: unchanged
    assert (small_fs / "exports" / "nginx-servers.conf").read_bytes() == exports_before
    assert "current_cert_id" not in store.fields.get(d.hostname, {})  # store: only the reason
    assert store.fields[d.hostname]["last_error_code"] == "state_write_failed"
    assert [k for _, k, _ in events.seen][-1] == "state_write_failed"
    assert events.seen[-1][2]["errno"] == "ENOSPC" and errors and errors[-1].errno == errno.ENOSPC
    assert leftovers(small_fs) == []


# -- the service on a full state dir ---------------------------------------------------------------------------------
def _metric(edge: EdgeProcess, name: str) -> float:
    st, body = edge.call("GET", "/metrics")
    assert st == 200
    total = 0.0
    for line in body.splitlines():
        m = re.match(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+]+)$", line)
        if m:
            total += float(m.group(2))
    return total


@pytest.mark.slow
def test_service_on_a_full_state_dir_keeps_serving_and_names_the_failure(tmp_path, pebble, dns):
    state = tmp_path / "state"
    _mount_tmpfs(state, "512k")
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={"EDGECERT_STATE_DIR": str(state)})
    try:
        edge.start()
        h = "full.disk.test"
        edge.add_domain(h, tenant="disk")
        d = edge.wait_status(h, "active", timeout=90)
        old = d["certificate"]["serial"]
        exports = state / "exports" / "nginx-servers.conf"
        exports_before = exports.read_bytes()
        live_before = os.path.realpath(state / "live" / h)
        fill(state, leave=0)
        placed = sum(e["kind"] == "order_placed" for e in edge.events(h))
        edge.wait_for(lambda: any(e["kind"] == "verified" for e in edge.events(h)), timeout=30, what="verified")
        for _ in range(6):  # a renewal asked while the first swap's last steps still run can be lost (manager)
            st, body = edge.call("POST", f"/v1/domains/{h}/renew")
            assert st in (200, 202), (st, body)
            try:
                edge.wait_for(lambda: sum(e["kind"] == "order_placed" for e in edge.events(h)) > placed,
                              timeout=10, what="the renewal's order")
                break
            except AssertionError:
                continue
        edge.wait_for(lambda: any(e["kind"] == "state_write_failed" for e in edge.events(h)), timeout=90,
                      what="state_write_failed event")
        d = edge.domain(h)
        assert d["last_error_code"] == "state_write_failed", d
        assert "ENOSPC" in d["last_error"] and "disk of the state dir is full" in d["last_error"]
        assert "Traceback" not in d["last_error"] and str(state) not in d["last_error"]
        # The old certificate is still what is served, from memory and from the files, whole.
        assert format(served_leaf(edge.https_port, h).serial_number, "x") == old
        assert os.path.realpath(state / "live" / h) == live_before
        pair = Path(live_before)
        leaf = x509.load_pem_x509_certificate((pair / "fullchain.pem").read_bytes())
        key = serialization.load_pem_private_key((pair / "privkey.pem").read_bytes(), None)
        assert format(leaf.serial_number, "x") == old
        assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
        assert exports.read_bytes() == exports_before
        assert leftovers(state) == []
        assert _metric(edge, "edgecert_state_write_errors_total") >= 1
        # Space again: the next certificate goes live completely, files and exports included. (Retrying the
        # install of the certificate that could not be written is the order journal's job, edge/lifecycle/manager.)
        (state / "filler").unlink()
        h2 = "after.disk.test"
        edge.add_domain(h2, tenant="disk")
        d2 = edge.wait_status(h2, "active", timeout=90)
        assert format(served_leaf(edge.https_port, h2).serial_number, "x") == d2["certificate"]["serial"]
        edge.wait_for(lambda: f"server_name {h2};" in exports.read_text(), timeout=10, what="exports with h2")
        assert exports.read_text().endswith("}\n") and f"server_name {h};" in exports.read_text()
        leaf2 = x509.load_pem_x509_certificate((state / "live" / h2 / "fullchain.pem").read_bytes())
        assert format(leaf2.serial_number, "x") == d2["certificate"]["serial"]
        assert leftovers(state) == []
    finally:
        edge.stop()
        subprocess.run(["umount", "-l", str(state)], capture_output=True)
