"""Generate N tenant certificates for the TLS-edge benchmark.

Layout (the same one the edge writes under ``$EDGECERT_STATE_DIR``)::

    OUT/live/<name>/fullchain.pem   leaf + intermediate
    OUT/live/<name>/privkey.pem     PKCS#8 EC key, mode 0600
    OUT/names.txt                   one name per line, in order
    OUT/ca/root.pem                 the bench root CA (trust anchor for sanity checks)
    OUT/ca/intermediate.pem
    OUT/manifest.json               written last: its presence means the set is complete

Names are ``t000001.bench.test`` ... ; leaves are ECDSA P-256, signed (ECDSA-SHA256) by a local
bench intermediate, itself signed by a local bench root. Default: ONE KEY PER NAME, as in
production. ``--shared-key`` reuses one leaf key for every name: generation is faster (no keygen
per name) but the server still loads N key files, so its memory/start-up figures are unchanged;
only use it when generation time matters more than realism, and say so next to the figures.

Runs on all cores with multiprocessing. Usage::

    python bench/gencerts.py --count 100000 --out bench/out/n100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["generate", "ensure", "name_for", "is_complete"]

DOMAIN = "bench.test"
MANIFEST_VERSION = 1
VALID_DAYS = 90


def name_for(i: int, domain: str = DOMAIN) -> str:
    """The i-th (1-based) bench tenant name."""
    return f"t{i:06d}.{domain}"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # regardless of umask or a previous file
        os.write(fd, data)
    finally:
        os.close(fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _make_ca(out: Path, not_before: dt.datetime, not_after: dt.datetime) -> tuple[bytes, bytes]:
    """Create root + intermediate; return (intermediate cert PEM, intermediate key PEM)."""
    ca_dir = out / "ca"
    ca_dir.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgecert bench root CA")])
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    int_key = ec.generate_private_key(ec.SECP256R1())
    int_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgecert bench intermediate")])
    inter = (
        x509.CertificateBuilder()
        .subject_name(int_name)
        .issuer_name(root_name)
        .public_key(int_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after + dt.timedelta(days=180))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(int_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    (ca_dir / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    _write_private(ca_dir / "root.key", _key_pem(root_key))
    inter_pem = inter.public_bytes(serialization.Encoding.PEM)
    inter_key_pem = _key_pem(int_key)
    (ca_dir / "intermediate.pem").write_bytes(inter_pem)
    _write_private(ca_dir / "intermediate.key", inter_key_pem)
    return inter_pem, inter_key_pem


# --- worker side -------------------------------------------------------------------------------

_W: dict = {}


def _worker_init(inter_pem: bytes, inter_key_pem: bytes, live: str, shared_key_pem: bytes | None,
                 not_before: float, not_after: float, domain: str) -> None:
    inter = x509.load_pem_x509_certificate(inter_pem)
    _W["inter_pem"] = inter_pem
    _W["issuer"] = inter.subject
    _W["ca_key"] = serialization.load_pem_private_key(inter_key_pem, None)
    _W["aki"] = x509.AuthorityKeyIdentifier.from_issuer_public_key(_W["ca_key"].public_key())
    _W["live"] = Path(live)
    _W["nb"] = dt.datetime.fromtimestamp(not_before, dt.timezone.utc)
    _W["na"] = dt.datetime.fromtimestamp(not_after, dt.timezone.utc)
    _W["domain"] = domain
    _W["ku"] = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    _W["eku"] = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    _W["bc"] = x509.BasicConstraints(ca=False, path_length=None)
    if shared_key_pem is not None:
        _W["shared_key"] = serialization.load_pem_private_key(shared_key_pem, None)
        _W["shared_key_pem"] = shared_key_pem
    else:
        _W["shared_key"] = None


def _make_range(bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    w = _W
    for i in range(lo, hi):
        name = name_for(i, w["domain"])
        if w["shared_key"] is not None:
            key, key_pem = w["shared_key"], w["shared_key_pem"]
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            key_pem = _key_pem(key)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(w["issuer"])
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(w["nb"])
            .not_valid_after(w["na"])
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(w["bc"], critical=True)
            .add_extension(w["ku"], critical=True)
            .add_extension(w["eku"], critical=False)
            .add_extension(w["aki"], critical=False)
            .sign(w["ca_key"], hashes.SHA256())
        )
        d = w["live"] / name
        d.mkdir(exist_ok=True)
        (d / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM) + w["inter_pem"])
        _write_private(d / "privkey.pem", key_pem)
    return hi - lo


# --- driver ------------------------------------------------------------------------------------

def is_complete(out: Path, count: int, shared_key: bool = False, min_valid_days: float = 2.0) -> bool:
    """True if OUT holds a finished set of COUNT certs (same key mode) valid for a while longer."""
    try:
        m = json.loads((Path(out) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        m.get("version") == MANIFEST_VERSION
        and m.get("count") == count
        and bool(m.get("shared_key")) == bool(shared_key)
        and m.get("not_after", 0) > time.time() + min_valid_days * 86400
    )


def generate(out: Path, count: int, *, workers: int | None = None, shared_key: bool = False,
             domain: str = DOMAIN, quiet: bool = False) -> dict:
    """Generate COUNT certificates into OUT (replacing what is there). Returns the manifest."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    live = out / "live"
    live.mkdir(parents=True)
    t0 = time.monotonic()
    now = time.time()
    not_before = now - 86400
    not_after = now + VALID_DAYS * 86400
    nb = dt.datetime.fromtimestamp(not_before, dt.timezone.utc)
    na = dt.datetime.fromtimestamp(not_after, dt.timezone.utc)
    inter_pem, inter_key_pem = _make_ca(out, nb, na)
    shared_pem = _key_pem(ec.generate_private_key(ec.SECP256R1())) if shared_key else None

    workers = workers or os.cpu_count() or 1
    chunk = 500
    ranges = [(lo, min(lo + chunk, count + 1)) for lo in range(1, count + 1, chunk)]
    done = 0
    init_args = (inter_pem, inter_key_pem, str(live), shared_pem, not_before, not_after, domain)
    if workers == 1:
        _worker_init(*init_args)
        results = map(_make_range, ranges)
        pool = None
    else:
        pool = mp.get_context("fork").Pool(workers, initializer=_worker_init, initargs=init_args)
        results = pool.imap_unordered(_make_range, ranges)
    try:
        last = time.monotonic()
        for n in results:
            done += n
            if not quiet and time.monotonic() - last > 5:
                last = time.monotonic()
                rate = done / (last - t0)
                print(f"gencerts: {done}/{count} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    (out / "names.txt").write_text("".join(name_for(i, domain) + "\n" for i in range(1, count + 1)))
    seconds = time.monotonic() - t0
    manifest = {
        "version": MANIFEST_VERSION,
        "count": count,
        "domain": domain,
        "shared_key": bool(shared_key),
        "key": "ECDSA P-256" + (" (ONE key shared by all names)" if shared_key else " (one key per name)"),
        "chain": "leaf + intermediate (root in ca/root.pem)",
        "not_before": not_before,
        "not_after": not_after,
        "workers": workers,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds, 1) if seconds > 0 else None,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if not quiet:
        print(f"gencerts: {count} certificates in {seconds:.1f} s ({count / seconds:.0f}/s, "
              f"{workers} workers, {'shared key' if shared_key else 'one key per name'}) -> {out}",
              file=sys.stderr, flush=True)
    return manifest


def ensure(out: Path, count: int, *, shared_key: bool = False, workers: int | None = None,
           quiet: bool = False) -> dict:
    """Reuse OUT if it already holds a complete, still-valid set of COUNT certs; else generate."""
    out = Path(out)
    if is_complete(out, count, shared_key):
        return json.loads((out / "manifest.json").read_text())
    return generate(out, count, workers=workers, shared_key=shared_key, quiet=quiet)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", "-n", type=int, required=True, help="number of tenant certificates")
    ap.add_argument("--out", type=Path, required=True, help="output directory (replaced)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--shared-key", action="store_true",
                    help="reuse ONE leaf key for all names (faster generation; not the default)")
    ap.add_argument("--domain", default=DOMAIN)
    ap.add_argument("--reuse", action="store_true", help="keep OUT if it is already complete")
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error("--count must be >= 1")
    if args.reuse and is_complete(args.out, args.count, args.shared_key):
        print(f"gencerts: {args.out} already complete", file=sys.stderr)
        return 0
    generate(args.out, args.count, workers=args.workers, shared_key=args.shared_key, domain=args.domain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
