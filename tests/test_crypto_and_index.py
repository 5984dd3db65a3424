"""Unit tests: key encryption at rest, the SNI index, the atomic live files."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from edge.lifecycle.files import LiveFiles
from edge.tls_edge.certificates import generate_default_certificate, make_server_context, memory_handshake
from edge.tls_edge.index import CertEntry, SniIndex
from store.crypto import DecryptionError, KeyBox, load_keybox
from tests.certs import self_signed


def test_keybox_roundtrip_binds_purpose_and_rejects_tampering():
    secret = os.urandom(32)
    kb = KeyBox(secret)
    blob = kb.encrypt(b"-----BEGIN PRIVATE KEY-----secret", purpose=b"cert-key:a.example.com")
    assert b"secret" not in blob
    assert kb.decrypt(blob, purpose=b"cert-key:a.example.com").endswith(b"secret")
    with pytest.raises(DecryptionError):
        kb.decrypt(blob, purpose=b"cert-key:b.example.com")
    with pytest.raises(DecryptionError):
        KeyBox(os.urandom(32)).decrypt(blob, purpose=b"cert-key:a.example.com")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError):
        kb.decrypt(tampered, purpose=b"cert-key:a.example.com")
    assert secret.hex() not in repr(kb) and repr(kb).startswith("KeyBox(key_id=")


def test_keybox_from_env_and_from_0600_file(tmp_path):
    a = load_keybox(secret_key="correct horse battery staple", state_dir=tmp_path)
    b = load_keybox(secret_key="correct horse battery staple", state_dir=tmp_path)
    assert a.decrypt(b.encrypt(b"x", purpose=b"p"), purpose=b"p") == b"x"
    k1 = load_keybox(secret_key=None, state_dir=tmp_path / "s")
    path = tmp_path / "s" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    k2 = load_keybox(secret_key=None, state_dir=tmp_path / "s")
    assert k2.decrypt(k1.encrypt(b"y", purpose=b"p"), purpose=b"p") == b"y"
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by others"):
        load_keybox(secret_key=None, state_dir=tmp_path / "s")
    with pytest.raises(ValueError):
        load_keybox(secret_key="short", state_dir=tmp_path)


def _cert(name: str, *, key=None) -> tuple[bytes, bytes, str]:
    return self_signed(name, key=key)


def _entry(name: str) -> CertEntry:
    pem, key, serial = _cert(name)
    return CertEntry(hostname=name, fullchain_pem=pem, key_pem=key, serial=serial, sha256="x",
                     not_after=dt.datetime.now(dt.timezone.utc))


def _handshake(ctx_server: ssl.SSLContext, sni: str | None) -> x509.Certificate:
    """A real in-memory TLS handshake against the server context; returns the served leaf."""
    return x509.load_der_x509_certificate(memory_handshake(ctx_server, sni))


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_sni_index_exact_then_wildcard_then_default_and_lru():
    dpem, dkey = generate_default_certificate()
    outcomes: list[str] = []
    idx = SniIndex(default_fullchain=dpem, default_key=dkey, max_contexts=2, on_outcome=outcomes.append)
    idx.put(_entry("a.example.com"))
    idx.put(_entry("*.example.com"), prebuild=False)
    idx.put(_entry("b.example.org"), prebuild=False)
    assert idx.lookup("a.example.com").hostname == "a.example.com"
    assert idx.lookup("zz.example.com").hostname == "*.example.com"
    assert idx.lookup("x.y.example.com") is None  # a wildcard covers one label only
    assert idx.lookup("nope.test") is None
    ctx = idx.default_context
    assert _cn(_handshake(ctx, "a.example.com")) == "a.example.com"
    assert _cn(_handshake(ctx, "ZZ.Example.COM")) == "*.example.com"
    assert _cn(_handshake(ctx, "b.example.org")) == "b.example.org"
    assert _cn(_handshake(ctx, "unknown.test")) == "edgecert default certificate"
    assert _cn(_handshake(ctx, None)) == "edgecert default certificate"
    assert outcomes == ["known", "known", "known", "unknown", "default"]
    assert idx.context_count() <= 2  # LRU bound holds; evicted entries are rebuilt on demand
    assert _cn(_handshake(ctx, "a.example.com")) == "a.example.com"


def test_sni_index_replace_is_atomic_and_removal_falls_back():
    dpem, dkey = generate_default_certificate()
    idx = SniIndex(default_fullchain=dpem, default_key=dkey)
    e1, e2 = _entry("r.example.com"), _entry("r.example.com")
    idx.put(e1)
    s1 = _handshake(idx.default_context, "r.example.com").serial_number
    idx.put(e2)
    s2 = _handshake(idx.default_context, "r.example.com").serial_number
    assert format(s1, "x") == e1.serial and format(s2, "x") == e2.serial and s1 != s2
    idx.remove("r.example.com")
    assert _cn(_handshake(idx.default_context, "r.example.com")) == "edgecert default certificate"


def test_mismatched_key_never_loads():
    pem, _, _ = _cert("m.example.com")
    _, other_key, _ = _cert("m.example.com")
    with pytest.raises(ssl.SSLError):
        make_server_context(pem, other_key)


def test_live_files_flip_atomically_and_keep_key_private(tmp_path):
    lf = LiveFiles(tmp_path)
    pem1, key1, s1 = _cert("f.example.com")
    pem2, key2, s2 = _cert("f.example.com")
    lf.install("f.example.com", cert_pem=pem1, chain_pem=b"", key_pem=key1, serial=s1)
    live = tmp_path / "live" / "f.example.com"
    assert (live / "fullchain.pem").read_bytes().strip() == pem1.strip()
    assert stat.S_IMODE(os.stat(live / "privkey.pem").st_mode) == 0o600
    lf.install("f.example.com", cert_pem=pem2, chain_pem=b"", key_pem=key2, serial=s2)
    assert (live / "privkey.pem").read_bytes() == key2
    for i in range(5):
        p, k, s = _cert("f.example.com")
        lf.install("f.example.com", cert_pem=p, chain_pem=b"", key_pem=k, serial=s)
    assert len(list((tmp_path / "archive" / "f.example.com").iterdir())) == 3  # pruned
    with pytest.raises(ValueError):
        lf.install("../etc", cert_pem=pem1, chain_pem=b"", key_pem=key1, serial=s1)
    lf.remove("f.example.com")
    assert not live.exists()
