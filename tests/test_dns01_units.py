"""DNS-01 pieces one by one: the label, the TSIG key, the RFC 2136 publisher and the challenge publisher against a
real Knot and a real store; the method choice with its HTTP-01 probe against a real HTTP server (the DNS answers
are given: the end-to-end tests in test_dns01.py take them from real servers)."""

from __future__ import annotations

import datetime as dt

import pytest
from aiohttp import web

from edge.lifecycle.dns01 import (Dns01Challenges, Dns01Error, Rfc2136Publisher, TsigKey, challenge_label,
                                  challenge_target)
from edge.lifecycle.dnscheck import DelegationResult, PointingResult
from edge.lifecycle.methods import MethodChooser
from store.models import Domain, DomainStatus
from tests.helpers import require_binary

ZONE = "acme.units.test"


@pytest.fixture(scope="module")
def knot(tmp_path_factory):
    require_binary("knotd")
    from tests.support.knot import KnotServer
    srv = KnotServer(work_dir=tmp_path_factory.mktemp("knot-units"), zone=ZONE).start()
    yield srv
    srv.stop()


def _publisher(knot, key: TsigKey | None = None) -> Rfc2136Publisher:
    host, port = knot.address.rsplit(":", 1)
    return Rfc2136Publisher(server=(host, int(port)), zone=ZONE, key=key or TsigKey.parse(knot.tsig), timeout=5)


def test_label_is_stable_short_and_shared_by_a_wildcard_and_its_base():
    lab = challenge_label("shop.customer.com")
    assert lab == challenge_label("Shop.Customer.COM.") and len(lab) == 16 and lab.isalnum() and lab.islower()
    assert challenge_label("*.customer.com") == challenge_label("customer.com") != challenge_label("www.customer.com")
    assert challenge_target("*.customer.com", "Acme.SaaS.example.") == f"{challenge_label('customer.com')}.acme.saas.example"


def test_tsig_key_parsing_never_shows_the_secret():
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnl0ZXM="
    k = TsigKey.parse(f"edgecert:HMAC-SHA256:{secret}")
    assert (k.name, k.algorithm) == ("edgecert", "hmac-sha256") and secret not in repr(k)
    assert k.redacted() == "edgecert:hmac-sha256:***"
    for bad in ("", "edgecert", "edgecert:hmac-sha256", f"edgecert:hmac-md5:{secret}", "edgecert:hmac-sha256:%%%",
                "edgecert:hmac-sha256:c2hvcnQ=", f"bad name!:hmac-sha256:{secret}"):
        with pytest.raises(ValueError) as e:
            TsigKey.parse(bad)
        assert secret not in str(e.value)


async def test_rfc2136_publish_check_remove_one_value_of_several(knot):
    pub = _publisher(knot)
    name = f"{challenge_label('two.units.test')}.{ZONE}"
    await pub.publish_txt(name, "value-one")
    await pub.publish_txt(name, "value-two")
    await pub.publish_txt(name, "value-two")  # idempotent
    assert sorted(knot.txt(name)) == ["value-one", "value-two"]
    assert await pub.visible(name, "value-one") and not await pub.visible(name, "value-three")
    await pub.remove_txt(name, "value-one")
    assert knot.txt(name) == ["value-two"]
    await pub.remove_txt(name, "value-two")
    await pub.remove_txt(name, "value-two")  # idempotent
    assert knot.txt(name) == []


async def test_rfc2136_refusals_are_typed_and_name_the_setting(knot):
    name = f"x.{ZONE}"
    wrong = TsigKey.parse("edgecert:hmac-sha256:" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=")
    with pytest.raises(Dns01Error) as e:
        await _publisher(knot, wrong).publish_txt(name, "v")
    assert e.value.reason == "refused" and "EDGECERT_DNS01_TSIG" in str(e.value) and e.value.retryable
    host, port = knot.address.rsplit(":", 1)
    unsigned = Rfc2136Publisher(server=(host, int(port)), zone=ZONE, key=None)
    with pytest.raises(Dns01Error) as e:
        await unsigned.publish_txt(name, "v")
    assert e.value.reason == "refused"
    with pytest.raises(Dns01Error):
        await _publisher(knot).publish_txt("outside.example.com", "v")
    from edge.demo.process import free_port
    gone = Rfc2136Publisher(server=("127.0.0.1", free_port()), zone=ZONE, key=TsigKey.parse(knot.tsig), timeout=2)
    with pytest.raises(Dns01Error) as e:
        await gone.publish_txt(name, "v")
    assert e.value.reason == "unreachable"
    assert knot.txt(name) == []


class _Recorder:
    """The wrapped publisher (HTTP-01 in the store in production): records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def publish(self, **kw) -> None:
        self.calls.append(("publish", kw["kind"], kw["token"]))

    async def withdraw(self, **kw) -> None:
        self.calls.append(("withdraw", kw["kind"], kw["token"]))


async def test_challenges_publish_visible_then_withdraw_by_another_node_after_restart(knot, tmp_path):
    from store import open_storage
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    try:
        inner = _Recorder()
        a = Dns01Challenges(inner=inner, dns=_publisher(knot), zone=ZONE, storage=storage)
        await a.publish(hostname="customer.units.test", kind="dns-01", token="tok-base", key_authorization="txt-b")
        await a.publish(hostname="customer.units.test", kind="dns-01", token="tok-wild", key_authorization="txt-w")
        await a.publish(hostname="customer.units.test", kind="http-01", token="tok-h", key_authorization="ka")
        name = challenge_target("customer.units.test", ZONE)
        assert sorted(knot.txt(name)) == ["txt-b", "txt-w"]
        assert inner.calls == [("publish", "http-01", "tok-h")]
        # Another node (or this one after a restart: empty memory) withdraws from the journaled value.
        b = Dns01Challenges(inner=inner, dns=_publisher(knot), zone=ZONE, storage=storage)
        await b.withdraw(hostname="customer.units.test", kind="dns-01", token="tok-wild")
        assert knot.txt(name) == ["txt-b"]
        await b.withdraw(hostname="customer.units.test", kind="dns-01", token="never-published")  # no-op
        await a.withdraw(hostname="customer.units.test", kind="dns-01", token="tok-base")
        await a.withdraw(hostname="customer.units.test", kind="http-01", token="tok-h")
        assert knot.txt(name) == [] and inner.calls[-1] == ("withdraw", "http-01", "tok-h")
        assert await storage.get_challenge("tok-base") is None

        class Invisible(Rfc2136Publisher):
            async def visible(self, fqdn: str, value: str) -> bool:
                return False
        host, port = knot.address.rsplit(":", 1)
        slow = Dns01Challenges(inner=inner, dns=Invisible(server=(host, int(port)), zone=ZONE,
                                                           key=TsigKey.parse(knot.tsig)),
                               zone=ZONE, storage=storage, visible_timeout=0.5)
        with pytest.raises(Dns01Error) as e:
            await slow.publish(hostname="late.units.test", kind="dns-01", token="tok-late", key_authorization="v")
        assert e.value.reason == "not_visible"
        await slow.withdraw(hostname="late.units.test", kind="dns-01", token="tok-late")  # still cleaned up
        assert knot.txt(challenge_target("late.units.test", ZONE)) == []
    finally:
        storage.close()


# -- method choice --------------------------------------------------------------------------------------------


class _Dns:
    """Given DNS answers (the real lookups are covered end to end in test_dns01.py)."""

    def __init__(self, *, points: bool, delegated: bool, zone: str | None = ZONE) -> None:
        self.points, self.delegated, self.dns01_zone = points, delegated, zone

    async def check(self, h: str) -> PointingResult:
        return PointingResult(self.points, h, "ok" if self.points else "wrong_address",
                              "points here" if self.points else f"{h} points at 192.0.2.1, not at this edge.",
                              addresses=["127.0.0.1"] if self.points else ["192.0.2.1"])

    async def check_delegation(self, h: str) -> DelegationResult:
        rec = {"name": f"_acme-challenge.{h.removeprefix('*.')}", "type": "CNAME", "value": f"l.{ZONE}",
               "purpose": "acme-challenge"}
        if self.dns01_zone is None:
            return DelegationResult(False, h, "not_configured", "off")
        return DelegationResult(self.delegated, h, "ok" if self.delegated else "missing",
                                "delegated" if self.delegated else "create the record", rec)

    def expected_record(self, h: str) -> dict:
        return {"type": "CNAME", "name": h + ".", "value": "edge.test.", "text": f"{h}. CNAME edge.test."}


class _Events:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    async def emit(self, hostname, kind, message, data=None) -> None:
        self.kinds.append(kind)


class _Answers:
    def __init__(self) -> None:
        self.answers: dict[str, str] = {}

    async def publish(self, *, hostname, kind, token, key_authorization) -> None:
        self.answers[token] = key_authorization

    async def withdraw(self, *, hostname, kind, token) -> None:
        self.answers.pop(token, None)


@pytest.fixture
async def http01_server():
    """A real HTTP server answering /.well-known/acme-challenge/<token> from a publisher's answers."""
    answers = _Answers()

    async def handler(request: web.Request) -> web.Response:
        v = answers.answers.get(request.match_info["token"])
        return web.Response(text=v) if v else web.Response(status=404)
    app = web.Application()
    app.router.add_get("/.well-known/acme-challenge/{token}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield answers, port
    await runner.cleanup()


def _chooser(dns, answers, port, **settings):
    from edge.config import Settings
    s = Settings.load(env={}, http_listen=f"127.0.0.1:{port}", **settings)
    events = _Events()

    async def update(d, **fields):
        for k, v in fields.items():
            setattr(d, k, v)
        return d
    return MethodChooser(settings=s, dns=dns, publisher=answers, events=events, update=update), events


def _domain(h: str, **kw) -> Domain:
    return Domain(hostname=h, tenant_id=1, **kw)


async def test_auto_prefers_delegation_then_probed_http01_then_tls_alpn(http01_server):
    answers, port = http01_server
    m, ev = _chooser(_Dns(points=True, delegated=True), answers, port)
    d = await m.decide(_domain("a.m.test"))
    assert d.ok and d.challenges == ("dns-01",) and not d.precutover
    m, ev = _chooser(_Dns(points=False, delegated=True), answers, port)
    d = await m.decide(_domain("a.m.test"))
    assert d.ok and d.challenges == ("dns-01",) and d.precutover
    m, ev = _chooser(_Dns(points=True, delegated=False), answers, port)
    d = await m.decide(_domain("a.m.test"))
    assert d.ok and d.challenges == ("http-01",) and ev.kinds == [] and answers.answers == {}  # probe withdrawn
    from edge.demo.process import free_port
    m, ev = _chooser(_Dns(points=True, delegated=False), answers, port, http01_probe_port=free_port())
    d = await m.decide(_domain("a.m.test"))
    assert d.ok and d.challenges == ("tls-alpn-01",) and ev.kinds == ["http01_unreachable"]
    d = await m.decide(_domain("a.m.test", validation="http-01"))
    assert not d.ok and d.code == "http01_unreachable"
    m, ev = _chooser(_Dns(points=False, delegated=False), answers, port)
    d = await m.decide(_domain("a.m.test"))
    assert not d.ok and d.code == "dns_wrong_address" and "_acme-challenge.a.m.test. CNAME" in d.message


async def test_the_method_that_last_worked_comes_first(http01_server):
    answers, port = http01_server
    m, _ = _chooser(_Dns(points=True, delegated=True), answers, port)
    assert (await m.decide(_domain("a.m.test", validation_method="http-01"))).challenges == ("http-01",)
    assert (await m.decide(_domain("a.m.test", validation_method="dns-01"))).challenges == ("dns-01",)
    assert (await m.decide(_domain("a.m.test", validation_method="tls-alpn-01"))).challenges == ("tls-alpn-01",)
    m, _ = _chooser(_Dns(points=False, delegated=True), answers, port)  # no longer pointing: the delegation
    assert (await m.decide(_domain("a.m.test", validation_method="http-01"))).challenges == ("dns-01",)
    from edge.demo.process import free_port
    m, _ = _chooser(_Dns(points=True, delegated=True), answers, port, http01_probe_port=free_port())
    assert (await m.decide(_domain("a.m.test", validation_method="http-01"))).challenges == ("dns-01",)  # port shut


async def test_wildcards_and_explicit_dns01_need_the_delegation(http01_server):
    answers, port = http01_server
    m, _ = _chooser(_Dns(points=True, delegated=False), answers, port)
    d = await m.decide(_domain("*.m.test"))
    assert not d.ok and d.code == "dns01_delegation_missing" and d.pointing is None  # not pointing-checked
    d = await m.decide(_domain("a.m.test", validation="dns-01"))
    assert not d.ok and d.code == "dns01_delegation_missing"
    m, _ = _chooser(_Dns(points=True, delegated=True), answers, port)
    d = await m.decide(_domain("*.m.test"))
    assert d.ok and d.challenges == ("dns-01",) and not d.precutover
    m, _ = _chooser(_Dns(points=True, delegated=False, zone=None), answers, port)
    d = await m.decide(_domain("*.m.test"))
    assert not d.ok and d.code == "dns01_not_configured" and "EDGECERT_DNS01_SERVER" in d.message


async def test_watch_tells_a_missing_delegation_once_and_the_restoration():
    dns = _Dns(points=False, delegated=False)
    m, ev = _chooser(dns, _Answers(), 80)
    now = dt.datetime.now(dt.timezone.utc)

    class Cert:
        not_before, not_after = now - dt.timedelta(days=10), now + dt.timedelta(days=80)
    d = _domain("*.w.test", status=DomainStatus.ACTIVE, validation_method="dns-01",
                delegation_seen_at=now - dt.timedelta(days=2))
    d, nxt = await m.watch(d, Cert, now)  # type: ignore[arg-type]
    assert d.last_error_code == "dns01_delegation_missing" and "_acme-challenge" in d.last_error
    assert nxt == now + dt.timedelta(days=1) and ev.kinds == ["delegation_missing"]
    d, _ = await m.watch(d, Cert, now)  # type: ignore[arg-type]
    assert ev.kinds == ["delegation_missing"]  # told once
    dns.delegated = True
    d, _ = await m.watch(d, Cert, now)  # type: ignore[arg-type]
    assert d.last_error is None and ev.kinds == ["delegation_missing", "delegation_restored"]


async def test_a_certificate_downloaded_before_a_restart_keeps_its_pre_cutover_state():
    m, _ = _chooser(_Dns(points=False, delegated=True), _Answers(), 80)
    d = _domain("moving.m.test", status=DomainStatus.ISSUING)
    await m.expect_resumed(d, object())
    fields = m.live_fields(d)
    assert fields["status"] == DomainStatus.PENDING_DNS and fields["validation_method"] == "dns-01"
    m, _ = _chooser(_Dns(points=True, delegated=True), _Answers(), 80)
    await m.expect_resumed(d, object())
    assert m.live_fields(d) == {}  # pointing already: it goes live as active
