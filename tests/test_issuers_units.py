"""Unit tests of the several-issuers pieces: settings (TOML tables, the environment form, checks that name the
setting and never echo a secret), the words for a paused identifier, what a tenant may read, per-CA ledger scopes."""

from __future__ import annotations

import datetime as dt

import pytest

from acme_client import errors
from edge.config import ConfigError, Settings

KEY = "c2VjcmV0LWhtYWMta2V5"  # base64url of "secret-hmac-key"
PAUSED = ("Your account is temporarily prevented from requesting certificates for shop.example.com and possibly "
          "others. Please visit: https://portal.letsencrypt.org/sfe/v1/unpause?jwt=eyJ.abc.def")


def test_environment_form_is_an_ordered_list_with_eab_for_the_first():
    s = Settings.load(env={"EDGECERT_ACME_DIRECTORY": "https://one.example/dir, https://two.example/dir",
                           "EDGECERT_ACME_EAB_KID": "kid", "EDGECERT_ACME_EAB_HMAC_KEY": KEY,
                           "EDGECERT_ACME_PROFILE": "tlsserver"})
    specs = s.issuer_specs()
    assert [x["directory"] for x in specs] == ["https://one.example/dir", "https://two.example/dir"]
    assert (specs[0]["eab_kid"], specs[0]["eab_hmac_key"]) == ("kid", KEY)
    assert specs[1]["eab_kid"] is None and all(x["profile"] == "tlsserver" for x in specs)
    assert s.redacted()["acme_eab_hmac_key"] == "***"


def test_issuers_tables_at_the_top_level_or_under_edgecert_and_the_variable_wins(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[edgecert]\nacme_email = "a@b.example"\n\n[[issuers]]\ndirectory = "https://x.example/dir"\n'
                 f'eab_kid = "k"\neab_hmac_key = "{KEY}"\ncaa_identities = ["x.example"]\n\n'
                 '[[issuers]]\ndirectory = "https://y.example/dir"\nprofile = "shortlived"\n')
    s = Settings.load(f, env={})
    specs = s.issuer_specs()
    assert [x["directory"] for x in specs] == ["https://x.example/dir", "https://y.example/dir"]
    assert specs[0]["caa_identities"] == ["x.example"] and specs[1]["profile"] == "shortlived"
    assert KEY not in str(s.redacted()) and KEY not in "\n".join(s.summary())
    s2 = Settings.load(f, env={"EDGECERT_ACME_DIRECTORY": "https://z.example/dir"})
    assert [x["directory"] for x in s2.issuer_specs()] == ["https://z.example/dir"]
    # Under [edgecert] too.
    f.write_text(f'[edgecert]\n[[edgecert.issuers]]\ndirectory = "https://w.example/dir"\n')
    assert [x["directory"] for x in Settings.load(f, env={}).issuer_specs()] == ["https://w.example/dir"]
    # Settings travel to edge workers as JSON.
    assert Settings.from_json(s.to_json()).issuer_specs() == specs


@pytest.mark.parametrize("table, words", [
    ('directory = "ftp://x"', "directory must be"),
    (f'directory = "https://x.example/d"\neab_kid = "k"', "eab_kid and eab_hmac_key go together"),
    ('directory = "https://x.example/d"\neab_kid = "k"\neab_hmac_key = "has spaces!"', "base64url"),
    ('directory = "https://x.example/d"\nprofile = "two words"', "profile"),
    ('directory = "https://x.example/d"\ncaa_identities = "x"', "caa_identities must be a list"),
    ('directory = "https://x.example/d"\nca_bundle = "/nonexistent.pem"', "not a readable file"),
    ('directory = "https://x.example/d"\neab_kidd = "k"', "did you mean eab_kid"),
    ('directory = "https://x.example/d"\nrate_limits = {nope = {capacity = 1}}', "unknown rate limit"),
])
def test_a_bad_issuers_table_is_refused_naming_the_table_and_key(tmp_path, table, words):
    f = tmp_path / "c.toml"
    f.write_text(f"[[issuers]]\n{table}\n")
    with pytest.raises(ConfigError) as e:
        Settings.load(f, env={})
    assert words in str(e.value) and "issuers" in str(e.value)
    assert "has spaces!" not in str(e.value)  # an HMAC key is never echoed


def test_environment_checks_name_the_variable():
    with pytest.raises(ConfigError, match="EDGECERT_ACME_EAB_KID and EDGECERT_ACME_EAB_HMAC_KEY go together"):
        Settings.load(env={"EDGECERT_ACME_EAB_KID": "k"})
    with pytest.raises(ConfigError, match="EDGECERT_ACME_DIRECTORY") as e:
        Settings.load(env={"EDGECERT_ACME_DIRECTORY": "https://a.example/dir,,https://b.example/dir"})
    with pytest.raises(ConfigError, match="twice"):
        Settings.load(env={"EDGECERT_ACME_DIRECTORY": "https://a.example/d,https://a.example/d"})
    with pytest.raises(ConfigError, match="EDGECERT_ACME_EAB_HMAC_KEY") as e:
        Settings.load(env={"EDGECERT_ACME_EAB_KID": "k", "EDGECERT_ACME_EAB_HMAC_KEY": "bad key!"})
    assert "bad key!" not in str(e.value)


def test_a_paused_identifier_is_its_own_error_with_the_unpause_url_for_the_operator_only():
    for ptype, status in (("urn:ietf:params:acme:error:rateLimited", 429),
                          ("urn:ietf:params:acme:error:unauthorized", 403)):
        e = errors.from_problem(ptype, PAUSED, status=status)
        assert isinstance(e, errors.IdentifierPaused) and not e.retryable
        assert e.url == "https://portal.letsencrypt.org/sfe/v1/unpause?jwt=eyJ.abc.def"
        assert e.to_dict()["unpause_url"] == e.url
        operator = errors.plain_reason(e)
        assert e.url in operator and "edgecert domains renew" in operator
        tenant = errors.tenant_text(operator)
        assert "://" not in tenant and "paused" in tenant and not errors.is_plain(operator)
        msg, data = errors.tenant_event("issuance_failed", str(e), {"error": e.to_dict()})
        assert "://" not in msg + str(data) and "the CA said" not in msg
    # A plain rate limit stays a rate limit.
    assert type(errors.from_problem("urn:ietf:params:acme:error:rateLimited", "too many certificates",
                                    status=429)) is errors.RateLimited


def test_tenant_event_drops_ca_words_and_urls_of_any_event():
    msg, data = errors.tenant_event("order_placed", "order placed https://ca.internal/order/1",
                                    {"order_url": "https://ca.internal/order/1", "order_id": 3,
                                     "directory": "https://ca.internal/dir"})
    assert "://" not in msg and data == {"order_id": 3}
    msg, _ = errors.tenant_event("dns_checked", "see https://x.internal/y for details", {})
    assert "://" not in msg


async def test_each_ca_has_its_own_ledger_scope(tmp_path):
    from acme_client.ratelimit import Limit, RateLedger
    from store import open_storage
    st = open_storage(f"sqlite:///{tmp_path}/l.db")
    one = {"duplicate_certificates": Limit("duplicate_certificates", "certificate", 1, dt.timedelta(days=7))}
    from acme_client.ratelimit import DEFAULT_LIMITS
    limits = {**DEFAULT_LIMITS, **one}
    a = RateLedger(st, limits, ca="https://a.example/dir")
    b = RateLedger(st, limits, ca="https://b.example/dir")
    now = dt.datetime.now(dt.timezone.utc)
    hold, res = await a.check_and_reserve(["x.example.com"], 1, now=now)
    assert hold is None
    await a.confirm("certificate", res, ["x.example.com"], 1, order_id=1, now=now)
    hold, _ = await a.check_and_reserve(["x.example.com"], 1, now=now)
    assert hold is not None and hold.limit == "duplicate_certificates" and "@" not in hold.message()
    hold, res = await b.check_and_reserve(["x.example.com"], 2, now=now)  # the other CA counts on its own
    assert hold is None
    await b.release(res)


async def test_the_chain_reports_each_cas_caa_identities_and_honours_directories(pebble, tmp_path):
    """Over the real Pebble (through the proxy that adds ``meta.caaIdentities``): the directory's identities, or the
    issuer's ``caa_identities`` setting instead; a ``directories=`` list naming no issuer places no order."""
    from acme_client.issuer import AcmeIssuer
    from acme_client.issuers import IssuerChain
    from store import open_storage
    from store.crypto import KeyBox
    from tests.support.acmeproxy import ProxyThread
    st = open_storage(f"sqlite:///{tmp_path}/c.db")
    kb = KeyBox(b"k" * 32)
    with ProxyThread(pebble.base_url, upstream_ca=pebble.ca_bundle, tls=pebble.tls,
                     directory_meta={"caaIdentities": ["ca-one.example"]}) as proxy:
        one = AcmeIssuer(storage=st, keybox=kb, publisher=None, directory_url=proxy.directory_url,
                         ca_bundle=proxy.ca_bundle)
        two = AcmeIssuer(storage=st, keybox=kb, publisher=None, directory_url=pebble.directory_url,
                         ca_bundle=pebble.ca_bundle, caa_identities=["ca-two.example"])
        chain = IssuerChain([one, two], storage=st)
        try:
            assert [i.directory_url for i in chain.issuers] == [proxy.directory_url, pebble.directory_url]
            assert await chain.caa_identities() == {proxy.directory_url: ["ca-one.example"],
                                                    pebble.directory_url: ["ca-two.example"]}
            before = proxy.count()
            with pytest.raises(errors.NoIssuer):
                await chain.issue(domain_id=1, names=["x.caa.test"], key_type="ecdsa-p256",
                                  directories=["https://elsewhere.example/dir"])
            assert proxy.count() == before  # nothing asked of any CA
        finally:
            chain.close()
