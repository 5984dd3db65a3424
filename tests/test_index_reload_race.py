"""A reload of the SNI index from the store (the sweep's ``changed_domains`` -> ``DomainManager.load_index``, or a
NOTIFY from another node) that read the store just before a swap committed must not apply that stale read after the
swap: it would take the new certificate out of the index (and its files) -- the name then served the default
certificate although the store says "active" (seen in CI: test_order_faults' nonce test, a first issuance that
landed while a sweep was reading) -- or put an older certificate back. Real services (SQLite store, files, index);
the store's read is held at the moment that makes the race certain, then released."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import threading

import pytest
from sqlalchemy import insert

from edge.app import build_services
from edge.config import Settings
from store.models import CertificateVersion, Domain, Tenant
from tests.test_swap_e2e import LocalCA, _key_pem, _pem


@pytest.fixture
async def services(tmp_path):
    s = Settings(state_dir=str(tmp_path / "state"), database_url=f"sqlite:///{tmp_path}/db.sqlite", exports=True,
                 nginx_site_include="")
    services = await build_services(s)
    yield services
    services.storage.close()


def _version(services, ca: LocalCA, name: str, vid: int, domain_id: int) -> tuple[CertificateVersion, bytes]:
    cert, key = ca.leaf(name)
    pem = _pem(cert)
    key_pem = _key_pem(key).encode()
    now = dt.datetime.now(dt.timezone.utc)
    v = CertificateVersion(id=vid, domain_id=domain_id, names=json.dumps([name]), serial=format(cert.serial_number, "x"),
                           not_before=now, not_after=cert.not_valid_after_utc, issuer="test",
                           sha256=hashlib.sha256(pem.encode()).hexdigest(), cert_pem=pem, chain_pem=_pem(ca.inter),
                           key_enc=services.keybox.encrypt(key_pem, purpose=f"cert-key:{name}".encode()),
                           key_type="ecdsa-p256", source="upload", created_at=now)
    return v, key_pem


def _insert(services, name: str, versions: list[CertificateVersion], current: int | None) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    with services.storage.engine.begin() as conn:
        conn.execute(insert(Tenant.__table__).values(id=1, name="t", created_at=now))
        conn.execute(insert(Domain.__table__).values(
            id=1, hostname=name, tenant_id=1, status="active" if current else "issuing", current_cert_id=current,
            attempts=0, dns_attempts=0, renew_requested=False, hook_pending=False, created_at=now, updated_at=now))
        for v in versions:
            conn.execute(insert(CertificateVersion.__table__).values(**v.model_dump()))


class _HeldRead:
    """``storage.served_rows`` that reads at once, then waits to return until released (from a test thread)."""

    def __init__(self, real) -> None:
        self.real = real
        self.read = threading.Event()
        self.release = threading.Event()

    def __call__(self, hostnames=None):
        rows = self.real(hostnames)
        self.read.set()
        assert self.release.wait(30)
        return rows


async def _race(services, name: str, version: CertificateVersion, key_pem: bytes) -> None:
    m = services.manager
    held = _HeldRead(services.storage.served_rows)
    services.storage.served_rows = held
    reload = asyncio.ensure_future(m.load_index([name]))
    assert await asyncio.to_thread(held.read.wait, 30)  # the reload has read the store: the swap comes now
    domain = await services.storage.get_domain(name)
    swap = asyncio.ensure_future(m.swap.go_live(domain, version, key_pem))
    await asyncio.sleep(0.2)  # the swap runs as far as it can while the read is held
    held.release.set()
    await asyncio.wait_for(asyncio.gather(reload, swap), 30)
    services.storage.served_rows = held.real


async def test_a_reload_that_read_before_a_first_swap_does_not_drop_the_new_certificate(services):
    ca = LocalCA()
    name = "first.race.test"
    v, key_pem = _version(services, ca, name, 1, 1)
    _insert(services, name, [v], current=None)  # issued, not live yet: the store serves nothing for it
    await _race(services, name, v, key_pem)
    entry = services.index.get(name)
    assert entry is not None and entry.serial == v.serial
    assert services.files.current_version(name) is not None
    d = await services.storage.get_domain(name)
    assert d.status == "active" and d.current_cert_id == 1
    # and the next reload agrees
    await services.manager.load_index([name])
    assert services.index.get(name).serial == v.serial


async def test_a_reload_that_read_before_a_renewal_swap_does_not_put_the_old_certificate_back(services):
    ca = LocalCA()
    name = "renew.race.test"
    old, _ = _version(services, ca, name, 1, 1)
    new, key_pem = _version(services, ca, name, 2, 1)
    _insert(services, name, [old, new], current=1)
    await services.manager.load_index([name])
    assert services.index.get(name).serial == old.serial
    await _race(services, name, new, key_pem)
    assert services.index.get(name).serial == new.serial
