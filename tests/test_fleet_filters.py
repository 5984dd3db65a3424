"""The fleet filters of ``list_domains`` / ``count_domains`` (issuer, expiring before, probe, metadata) and the
per-hostname settings rows of the edge's loaders, in SQL, on SQLite and on PostgreSQL alike. Issue 17."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from types import SimpleNamespace

from store import open_storage
from store.models import CertificateVersion, utcnow
from store.readonly import EdgeStore

from edge.tls_edge.index import HostSettings, SniIndex, load_host_settings

LE = "https://acme-v02.api.letsencrypt.org/directory"
ZS = "https://acme.zerossl.com/v2/DV90"

# hostname: (issuer DN, issuer directory, days left, last probe ok, metadata)
ROWS = {
    "a1.example.com": ("CN=R11,O=Let's Encrypt,C=US", LE, 80, True, {"plan": "gold", "region": "eu"}),
    "a2.example.com": ("CN=R10,O=Let's Encrypt,C=US", LE, 10, False, {"plan": "free"}),
    "a10.example.com": ("CN=ZeroSSL ECC Domain Secure Site CA,O=ZeroSSL,C=AT", ZS, 5, False,
                        {"note": '"plan":"gold"', "x": "plan"}),  # the pair's text inside a value: no match
    "a3.example.com": (None, None, None, None, {"plan": "Gold", "région": "é\\\"u"}),  # no certificate
    "b1.example.com": (None, None, None, True, None),
}


def _seed(st) -> None:
    async def run():
        t = await st.ensure_tenant("t1")
        t2 = await st.ensure_tenant("t2")
        for h, (issuer, directory, days, probe, md) in ROWS.items():
            d = await st.add_domain(h, (t2 if h.startswith("b") else t).id, custom_metadata=md,
                                    last_probe_ok=probe)
            if issuer is not None:
                now = utcnow()
                await st.add_certificate(CertificateVersion(
                    domain_id=d.id, names=json.dumps([h]), serial=f"{abs(hash(h)):x}"[:16],
                    not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=days), issuer=issuer,
                    sha256="0" * 64, cert_pem="-----BEGIN CERTIFICATE-----\n", chain_pem="", key_enc=b"x",
                    key_type="ecdsa-p256", issuer_directory=directory))
    asyncio.run(run())


def _names(st, **filters) -> list[str]:
    rows = asyncio.run(st.list_domains(**filters))
    n = asyncio.run(st.count_domains(**filters))
    assert n == len(rows)
    return [d.hostname for d in rows]


def test_fleet_filters_in_sql_on_both_backends(database_url):
    st = open_storage(database_url)
    try:
        _seed(st)
        soon = utcnow() + dt.timedelta(days=30)
        assert _names(st, issuer=LE) == ["a1.example.com", "a2.example.com"]
        assert _names(st, issuer="let's encrypt") == ["a1.example.com", "a2.example.com"]  # any case
        assert _names(st, issuer="zerossl") == ["a10.example.com"]
        assert _names(st, issuer="100%") == []  # LIKE wildcards are literal
        assert _names(st, expiring_before=soon) == ["a2.example.com", "a10.example.com"]
        assert _names(st, expiring_before=soon, issuer=LE) == ["a2.example.com"]
        assert _names(st, probe="failing") == ["a2.example.com", "a10.example.com"]
        assert _names(st, probe="ok") == ["a1.example.com", "b1.example.com"]
        assert _names(st, probe="unknown") == ["a3.example.com"]
        assert _names(st, metadata=("plan", "gold")) == ["a1.example.com"]  # exact: not "Gold", not in a value
        assert _names(st, metadata=("plan", "Gold")) == ["a3.example.com"]
        assert _names(st, metadata=("plan", "gol")) == []
        assert _names(st, metadata=("région", 'é\\"u')) == ["a3.example.com"]  # non-ASCII, quotes, backslash
        assert _names(st, metadata=("x", "plan")) == ["a10.example.com"]
        assert _names(st, metadata=("plan", "free"), probe="failing", prefix="a") == ["a2.example.com"]
        t1 = asyncio.run(st.get_tenant("t1"))
        assert _names(st, tenant_id=t1.id, probe="ok") == ["a1.example.com"]
        # metadata is stored canonically, whatever order it was given in
        d = asyncio.run(st.update_domain("b1.example.com", custom_metadata={"z": "1", "a": "2"}))
        assert d.custom_metadata == '{"a":"2","z":"1"}'
        assert _names(st, metadata=("z", "1")) == ["b1.example.com"]
        d = asyncio.run(st.update_domain("b1.example.com", custom_metadata={}))
        assert d.custom_metadata is None
    finally:
        st.close()


def test_host_settings_rows_and_the_routing_table(database_url):
    st = open_storage(database_url)
    ro = EdgeStore(database_url)
    try:
        async def run():
            t = await st.ensure_tenant("rt")
            other = await st.ensure_tenant("rt2")
            await st.add_domain("own.rt.test", t.id, origin="https://own.example", min_tls_version="1.3")
            await st.add_domain("inherits.rt.test", t.id, http2=False)
            await st.add_domain("*.wild.rt.test", other.id, origin="http://10.0.0.9:8080")
            await st.add_domain("plain.rt.test", other.id)
            await st.add_domain("tenant-set.rt.test", other.id, origin="https://t.example", origin_public_only=True)
        asyncio.run(run())
        want = {("own.rt.test", "https://own.example", "1.3", None, None), ("inherits.rt.test", None, None, False, None),
                ("*.wild.rt.test", "http://10.0.0.9:8080", None, None, None),
                ("tenant-set.rt.test", "https://t.example", None, None, True)}
        assert set(st.host_settings_rows()) == want
        assert set(ro.host_settings_rows()) == want  # the edge workers' lean loader reads the same
        asyncio.run(st.set_tenant_origin("rt", "https://tenant.example"))
        want2 = {("own.rt.test", "https://own.example", "1.3", None, None),  # its own origin wins
                 ("inherits.rt.test", "https://tenant.example", None, False, None)}
        assert set(ro.host_settings_rows(["own.rt.test", "inherits.rt.test", "plain.rt.test"])) == want2
        assert set(st.host_settings_rows(["own.rt.test", "inherits.rt.test", "plain.rt.test"])) == want2
        # the table in memory: exact name, then the wildcard one label up for a name with no domain of its own
        index = SimpleNamespace(routes={}, _exact={"plain.wild.rt.test": object()})
        load_host_settings(index, ro.host_settings_rows())
        look = lambda name: SniIndex.host_settings(index, name)  # noqa: E731
        assert look("own.rt.test") == HostSettings("https://own.example", "1.3", None)
        assert look("inherits.rt.test") == HostSettings("https://tenant.example", None, False)
        assert look("x.wild.rt.test").origin == "http://10.0.0.9:8080"
        assert look("tenant-set.rt.test").origin_public_only and not look("own.rt.test").origin_public_only
        assert look("plain.wild.rt.test") is None  # a domain of its own: not the wildcard's settings
        assert look("plain.rt.test") is None
        asyncio.run(st.update_domain("own.rt.test", origin=None, min_tls_version=None))
        asyncio.run(st.set_tenant_origin("rt", None))
        load_host_settings(index, ro.host_settings_rows(["own.rt.test"]), hostnames=["own.rt.test"])
        assert look("own.rt.test") is None and look("inherits.rt.test") is not None
    finally:
        ro.close()
        st.close()
