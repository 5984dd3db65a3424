"""CAA (RFC 8659): the rules (acme_client/caa.py), the tree climbing and alias rule (edge/lifecycle/caa.py) on a
fake zone, and the DNS side against real CAA records served by pebble-challtestsrv."""

from __future__ import annotations


import pytest

from acme_client.caa import CaaRecord, evaluate, issuer_domain
from edge.dns import make_resolver
from edge.lifecycle.caa import CaaGate, CaaLookupError, dns_fetch, relevant_caa_set

LE = ["letsencrypt.org"]


def rec(tag: str, value: str, flags: int = 0, owner: str = "customer.com") -> CaaRecord:
    return CaaRecord(flags, tag, value, owner)


# -- the rules ------------------------------------------------------------------------------------------------------
def test_no_records_allow_every_ca():
    assert evaluate([], LE).allowed is True


def test_issue_names_the_ca_or_another():
    assert evaluate([rec("issue", "letsencrypt.org")], LE).allowed is True
    v = evaluate([rec("issue", "other-ca.example")], LE)
    assert v.allowed is False and v.record == rec("issue", "other-ca.example") and v.tag == "issue"
    # Several issue records: any naming the CA allows it.
    assert evaluate([rec("issue", "other-ca.example"), rec("issue", "LetsEncrypt.org.")], LE).allowed is True


def test_parameters_after_semicolon_are_ignored_for_matching():
    assert issuer_domain("letsencrypt.org; accounturi=https://x/acct/1; validationmethods=dns-01") == \
        "letsencrypt.org"
    assert evaluate([rec("issue", " letsencrypt.org ;accounturi=https://a/1")], LE).allowed is True
    assert evaluate([rec("issue", "other.example; letsencrypt.org")], LE).allowed is False


def test_empty_issue_forbids_every_ca_even_when_identities_are_unknown():
    for value in (";", "", "  ;  policy=x"):
        assert evaluate([rec("issue", value)], LE).allowed is False
        assert evaluate([rec("issue", value)], []).allowed is False


def test_issuewild_decides_for_wildcards_when_present():
    records = [rec("issue", "other-ca.example"), rec("issuewild", "letsencrypt.org")]
    assert evaluate(records, LE, wildcard=True).allowed is True
    assert evaluate(records, LE, wildcard=False).allowed is False
    # issuewild ";" forbids wildcards only.
    records = [rec("issue", "letsencrypt.org"), rec("issuewild", ";")]
    assert evaluate(records, LE, wildcard=True).allowed is False
    assert evaluate(records, LE, wildcard=False).allowed is True
    # Without issuewild, issue applies to wildcards too.
    assert evaluate([rec("issue", "other-ca.example")], LE, wildcard=True).allowed is False


def test_critical_unknown_tag_forbids_and_non_critical_unknown_is_ignored():
    v = evaluate([rec("issue", "letsencrypt.org"), rec("tbs", "unknown", flags=128)], LE)
    assert v.allowed is False and v.record.tag == "tbs"
    assert evaluate([rec("issue", "letsencrypt.org"), rec("tbs", "unknown", flags=0)], LE).allowed is True
    # A critical known tag is fine.
    assert evaluate([rec("issue", "letsencrypt.org", flags=128)], LE).allowed is True


def test_a_set_without_issue_property_restricts_nothing():
    assert evaluate([rec("iodef", "mailto:sec@customer.com")], LE).allowed is True


def test_unknown_identities_cannot_judge_a_named_ca():
    assert evaluate([rec("issue", "other-ca.example")], []).allowed is None


def test_record_text_is_zone_file_syntax():
    assert rec("issue", "letsencrypt.org").text() == 'customer.com. CAA 0 issue "letsencrypt.org"'


# -- climbing and aliases on a fake zone ----------------------------------------------------------------------------
class FakeZone:
    """A resolver over a dict: follows aliases like a real one (the records come back from the target)."""

    def __init__(self, records: dict[str, list[tuple[str, str]]], cnames: dict[str, str] | None = None,
                 failing: set[str] | None = None) -> None:
        self.records, self.cnames, self.failing = records, cnames or {}, failing or set()
        self.asked: list[str] = []

    async def __call__(self, name: str):
        self.asked.append(name)
        if name in self.failing:
            raise CaaLookupError(name, "SERVFAIL")
        chain, target = [], name
        while target in self.cnames:
            target = self.cnames[target]
            chain.append(target)
        return [CaaRecord(0, t, v, target) for t, v in self.records.get(target, [])], chain


async def test_climbs_to_the_first_non_empty_set():
    zone = FakeZone({"customer.com": [("issue", "other-ca.example")], "com": [("issue", ";")]})
    records, queried, _ = await relevant_caa_set("a.b.customer.com", zone)
    assert queried == "customer.com" and [r.value for r in records] == ["other-ca.example"]
    assert zone.asked == ["a.b.customer.com", "b.customer.com", "customer.com"]
    # A set lower in the tree wins over its parents'.
    zone = FakeZone({"customer.com": [("issue", "other-ca.example")], "shop.customer.com": [("issue", "letsencrypt.org")]})
    records, queried, _ = await relevant_caa_set("shop.customer.com", zone)
    assert queried == "shop.customer.com" and records[0].value == "letsencrypt.org"
    # Nothing anywhere up to the TLD (never the root).
    zone = FakeZone({})
    assert await relevant_caa_set("x.customer.com", zone) == ([], None, [])
    assert zone.asked == ["x.customer.com", "customer.com", "com"]


async def test_alias_target_records_apply_but_never_the_targets_parents():
    # shop.customer.com CNAME shop.cdn.example; the target's records are the relevant set.
    zone = FakeZone({"shop.cdn.example": [("issue", "other-ca.example")]},
                    cnames={"shop.customer.com": "shop.cdn.example"})
    records, queried, chain = await relevant_caa_set("shop.customer.com", zone)
    assert queried == "shop.customer.com" and chain == ["shop.cdn.example"]
    assert records[0].owner == "shop.cdn.example"
    # The target has no set but its parent has: NOT used (RFC 8659 §3); the climb goes on from customer.com.
    zone = FakeZone({"cdn.example": [("issue", ";")], "customer.com": [("issue", "letsencrypt.org")]},
                    cnames={"shop.customer.com": "shop.cdn.example"})
    records, queried, _ = await relevant_caa_set("shop.customer.com", zone)
    assert queried == "customer.com" and records[0].value == "letsencrypt.org"
    assert "cdn.example" not in zone.asked


async def test_wildcard_checked_at_its_base_name():
    zone = FakeZone({"customer.com": [("issue", "letsencrypt.org"), ("issuewild", "other-ca.example")]})
    records, queried, _ = await relevant_caa_set("*.customer.com", zone)
    assert queried == "customer.com" and zone.asked[0] == "customer.com"


# -- the gate -------------------------------------------------------------------------------------------------------
class Issuer:
    """The gate reads only the CAs' CAA identities."""

    def __init__(self, ids: dict[str, list[str]]) -> None:
        self.ids = ids

    async def caa_identities(self):
        return self.ids


async def test_gate_forbidden_names_the_record_to_add():
    zone = FakeZone({"customer.com": [("issue", "other-ca.example")]})
    out = await CaaGate(zone).check("shop.customer.com", Issuer({"https://ca/dir": LE}))
    assert out.outcome == "forbidden" and not out.proceed and out.code == "caa_forbidden"
    assert out.record_to_add == 'customer.com. CAA 0 issue "letsencrypt.org"'
    assert 'customer.com. CAA 0 issue "letsencrypt.org"' in out.message
    assert 'customer.com. CAA 0 issue "other-ca.example"' in out.message
    assert "https://" not in out.message  # no internal URL in tenant words


async def test_gate_wildcard_suggests_issuewild_and_critical_tag_wording():
    zone = FakeZone({"customer.com": [("issue", "letsencrypt.org"), ("issuewild", "other-ca.example")]})
    out = await CaaGate(zone).check("*.customer.com", Issuer({"d": LE}))
    assert out.record_to_add == 'customer.com. CAA 0 issuewild "letsencrypt.org"'

    async def crit(name):
        return ([CaaRecord(0, "issue", "letsencrypt.org", "customer.com"),
                 CaaRecord(128, "x-future", "1", "customer.com")] if name == "customer.com" else []), []
    out = await CaaGate(crit).check("shop.customer.com", Issuer({"d": LE}))
    assert out.outcome == "forbidden" and "critical" in out.message


async def test_gate_some_issuers_allowed_restricts_the_order():
    zone = FakeZone({"customer.com": [("issue", "second-ca.example")]})
    issuer = Issuer({"https://first/dir": LE, "https://second/dir": ["second-ca.example"]})
    out = await CaaGate(zone).check("shop.customer.com", issuer)
    assert out.proceed and out.directories == ["https://second/dir"]
    # All allowed: no restriction passed.
    zone = FakeZone({"customer.com": [("issue", "second-ca.example"), ("issue", "letsencrypt.org")]})
    out = await CaaGate(zone).check("shop.customer.com", issuer)
    assert out.proceed and out.directories is None


async def test_gate_lookup_failure_holds_without_verdict_and_unknown_identities_proceed():
    zone = FakeZone({}, failing={"customer.com"})
    out = await CaaGate(zone).check("shop.customer.com", Issuer({"d": LE}))
    assert out.outcome == "lookup_failed" and not out.proceed and out.code == "caa_lookup_failed"
    # No identities known (Pebble publishes none): a set naming some CA cannot be judged: the CA decides.
    zone = FakeZone({"customer.com": [("issue", "other-ca.example")]})
    assert (await CaaGate(zone).check("shop.customer.com", Issuer({"d": []}))).proceed
    # ...but a set that forbids every CA is known to forbid ours.
    zone = FakeZone({"customer.com": [("issue", ";")]})
    out = await CaaGate(zone).check("shop.customer.com", Issuer({"d": []}))
    assert out.outcome == "forbidden"
    # Disabled (caa_check = false): nothing is looked up.
    zone = FakeZone({"customer.com": [("issue", ";")]})
    assert (await CaaGate(zone, enabled=False).check("shop.customer.com", Issuer({"d": LE}))).proceed
    assert zone.asked == []


# -- real DNS answers (pebble-challtestsrv) -------------------------------------------------------------------------
@pytest.mark.real
async def test_dns_fetch_reads_real_caa_records_aliases_and_servfail(dns):
    host, port = dns.dns_address.rsplit(":", 1)
    fetch = dns_fetch(make_resolver((host, int(port)), lifetime=3, timeout=1.5))
    dns.add_caa("caa-real.test", [{"tag": "issue", "value": "letsencrypt.org; accounturi=x"},
                                  {"tag": "issuewild", "value": ";"}])
    dns.add_caa("target.caa-cdn.test", [{"tag": "issue", "value": "other-ca.example"}])
    dns.set_cname("alias.caa-real.test", "target.caa-cdn.test")
    dns.set_servfail("broken.caa-bad.test")
    try:
        records, queried, _ = await relevant_caa_set("a.b.caa-real.test", fetch)
        assert queried == "caa-real.test"
        assert {(r.tag, r.value) for r in records} == {("issue", "letsencrypt.org; accounturi=x"),
                                                        ("issuewild", ";")}
        assert evaluate(records, LE).allowed is True and evaluate(records, LE, wildcard=True).allowed is False
        records, queried, chain = await relevant_caa_set("alias.caa-real.test", fetch)
        assert queried == "alias.caa-real.test" and chain == ["target.caa-cdn.test"]
        assert records[0].owner == "target.caa-cdn.test" and records[0].value == "other-ca.example"
        with pytest.raises(CaaLookupError):
            await relevant_caa_set("broken.caa-bad.test", fetch)
    finally:
        dns.clear_caa("caa-real.test")
        dns.clear_caa("target.caa-cdn.test")
        dns.clear_cname("alias.caa-real.test")
        dns.clear_servfail("broken.caa-bad.test")


@pytest.mark.real
async def test_dns_fetch_timeout_is_a_lookup_failure_not_a_verdict():
    from edge.demo.components import free_port
    fetch = dns_fetch(make_resolver(("127.0.0.1", free_port(udp=True)), lifetime=1.0, timeout=0.5))
    with pytest.raises(CaaLookupError):
        await relevant_caa_set("shop.customer.test", fetch)
