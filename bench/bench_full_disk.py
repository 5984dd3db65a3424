"""What a full state dir does to the files edgecert writes, measured on a REAL small tmpfs (needs root to mount).

    sudo PYTHONPATH=. .venv/bin/python bench/bench_full_disk.py [--size 256k] [--names 600]

For each writer (exports, a certificate version) it fills the tmpfs, leaves a little room, writes, and reports:
the exception (errno), what is in place afterwards (bytes, whole or cut mid-line), temporary files and partial
versions left. Run it against an older checkout (PYTHONPATH=that checkout) to compare.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def fill(fs: Path, leave: int) -> None:
    fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    total = os.fstat(fd).st_size
    try:
        while True:
            try:
                total += os.write(fd, b"\0" * 65536)
            except OSError:
                break
        os.ftruncate(fd, max(0, total - leave))
    finally:
        os.close(fd)


def leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if p.name.endswith(".tmp") or p.name.startswith(".partial-")]


def self_signed(name: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)  # a big key: 3.2 kB of PEM
    now = dt.datetime.now(dt.timezone.utc)
    n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(n).issuer_name(n).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=9))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="256k")
    ap.add_argument("--names", type=int, default=600)
    a = ap.parse_args()
    from edge.lifecycle.exports import write_exports
    from edge.lifecycle.files import LiveFiles
    with tempfile.TemporaryDirectory() as d:
        fs = Path(d)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={a.size}", "tmpfs", str(fs)], check=True)
        try:
            lf = LiveFiles(fs)
            few = ["a.example.com", "b.example.com"]
            for h in few:
                c, k = self_signed(h)
                lf.install(h, cert_pem=c, chain_pem=b"", key_pem=k, serial=h[0] * 8)
            paths = write_exports(fs, few)
            before = paths["nginx_servers"].read_bytes()
            many = [f"tenant-{i:05d}.example.com" for i in range(a.names)]
            for h in many:  # live links (short symlinks take no data blocks), so that the exports name them
                os.symlink("a.example.com", fs / "live" / h)
            fill(fs, leave=20000)
            try:
                write_exports(fs, few + many)
                err = "no error"
            except OSError as e:
                err = f"OSError errno={e.errno} ({os.strerror(e.errno or 0)})"
            after = paths["nginx_servers"].read_bytes()
            print(f"exports, {a.names + 2} server blocks on a full {a.size} tmpfs: {err}; nginx-servers.conf in place: "
                  f"{len(after)} bytes, {after.count(b'server {')} blocks, unchanged={after == before}, "
                  f"ends with a whole line={after.endswith(b'}' + bytes([10]))}; leftovers={leftovers(fs)}")
            (fs / "filler").unlink()
            for h in many:
                os.unlink(fs / "live" / h)
            h = "a.example.com"
            live_before = os.path.realpath(fs / "live" / h)
            c, k = self_signed(h)
            fill(fs, leave=6000)
            try:
                lf.install(h, cert_pem=c, chain_pem=b"", key_pem=k, serial="n" * 8)
                err = "no error"
            except OSError as e:
                err = f"OSError errno={e.errno} ({os.strerror(e.errno or 0)})"
            live_after = os.path.realpath(fs / "live" / h)
            hap = Path(live_after, "haproxy.pem").read_bytes() if Path(live_after, "haproxy.pem").exists() else b""
            versions = sorted(p.name for p in (fs / "archive" / h).iterdir())
            print(f"certificate version on a full {a.size} tmpfs: {err}; live link unchanged={live_after == live_before}; "
                  f"served haproxy.pem {len(hap)} bytes, whole key={hap.rstrip().endswith(b'-----END PRIVATE KEY-----')}; "
                  f"archive dirs={len(versions)} {versions}; leftovers={leftovers(fs)}")
        finally:
            subprocess.run(["umount", "-l", str(fs)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
