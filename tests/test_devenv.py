"""Tests of edge.devenv against the real programs: pebble-challtestsrv, Pebble, PostgreSQL.

Missing programs skip these tests locally but fail them under CI=true.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import ssl
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import josepy as jose
import pytest
from acme import challenges, client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.demo.components import (
    ChallTestSrv,
    DevEnvError,
    Pebble,
    free_port,
    generate_local_ca,
)
from tests.support.postgres import TEST_DATABASE_URL_ENV, PostgresServer, find_postgres_bin_dir

pytestmark = pytest.mark.real


def require(what: str, present: bool) -> None:
    """Skip when a component is missing, but fail under CI=true (never skip in CI)."""
    if present:
        return
    msg = f"{what} is not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " (CI=true: missing components fail, they are not skipped)")
    pytest.skip(msg)


def require_pebble() -> None:
    require("pebble", bool(shutil.which("pebble") or os.access("/usr/bin/pebble", os.X_OK)))
    require("pebble-challtestsrv", bool(shutil.which("pebble-challtestsrv")
                                        or os.access("/usr/bin/pebble-challtestsrv", os.X_OK)))


# ----------------------------------------------------------------------- a tiny ACME client
# (test helper only: the product's client lives elsewhere)


class AcmeTestClient:
    """The `acme` library driven synchronously, with every HTTP response kept in
    ``self.responses`` through a requests response hook (how a client reads Retry-After:
    `acme.messages.Error` itself carries no status or headers)."""

    def __init__(self, directory_url: str, ca_bundle: str) -> None:
        self.key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        self.net = client.ClientNetwork(self.key, alg=jose.ES256, verify_ssl=ca_bundle,
                                        user_agent="edgecert-tests")
        self.responses: list = []
        self.net.session.hooks["response"].append(lambda r, *a, **k: self.responses.append(r))
        self.directory_url = directory_url
        self.acme: client.ClientV2 | None = None

    def connect(self) -> "AcmeTestClient":
        directory = client.ClientV2.get_directory(self.directory_url, self.net)
        self.acme = client.ClientV2(directory, self.net)
        return self

    def register(self) -> "AcmeTestClient":
        if self.acme is None:
            self.connect()
        regr = self.acme.new_account(
            messages.NewRegistration.from_data(email="ops@example.com", terms_of_service_agreed=True)
        )
        self.net.account = regr
        return self

    @staticmethod
    def csr_for(domains: list[str]) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return crypto_util.make_csr(pem, domains)

    def new_order(self, domains: list[str]) -> messages.OrderResource:
        return self.acme.new_order(self.csr_for(domains))

    def complete(self, order: messages.OrderResource, timeout: float = 30) -> messages.OrderResource:
        """Answer HTTP-01 (Pebble runs with PEBBLE_VA_ALWAYS_VALID=1 here), finalize."""
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            chall = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
            self.acme.answer_challenge(chall, chall.response(self.key))
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        return self.acme.poll_and_finalize(order, deadline)

    def issue(self, domains: list[str]) -> str:
        return self.complete(self.new_order(domains)).fullchain_pem


def pem_certs(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("devenv")


@pytest.fixture(scope="module")
def cts(work):
    require_pebble()
    with ChallTestSrv(work_dir=work / "cts") as srv:
        yield srv


@pytest.fixture(scope="module")
def pebble(cts, work):
    with Pebble(dns_server=cts, work_dir=work / "pebble", always_valid=True) as p:
        yield p


def query(cts: ChallTestSrv, name: str, rdtype: str) -> tuple[str, list[str]]:
    """Raw DNS query: (rcode text, answer RRs as 'name TYPE value' strings)."""
    resp = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=cts.dns_port, timeout=2)
    answers = [
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in resp.answer for rd in rrset
    ]
    return dns.rcode.to_text(resp.rcode()), answers


# ----------------------------------------------------------------------- basics


def test_free_port_is_bindable():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    uport = free_port(udp=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind(("127.0.0.1", uport))
        t.bind(("127.0.0.1", uport))


def test_free_port_draws_from_the_range_it_is_given(monkeypatch):
    """The suite's xdist workers each draw from their own part of the range (conftest); a range outside the
    allowed one, or not a range at all, is ignored rather than obeyed."""
    from edge.demo.process import port_range
    monkeypatch.delenv("EDGECERT_DEMO_PORT_RANGE", raising=False)
    bottom, top = port_range()
    assert 10000 == bottom < top
    lo, hi = bottom + 100, bottom + 140
    monkeypatch.setenv("EDGECERT_DEMO_PORT_RANGE", f"{lo}-{hi}")
    assert port_range() == (lo, hi)
    assert all(lo <= free_port() <= hi for _ in range(30))
    for bad in ("80-90", f"{hi}-{lo}", "nonsense", f"{lo}-{top + 5}"):
        monkeypatch.setenv("EDGECERT_DEMO_PORT_RANGE", bad)
        assert port_range() == (bottom, top), bad


def test_generate_local_ca(tmp_path):
    files = generate_local_ca(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_pem.read_bytes())
    leaf = x509.load_pem_x509_certificate(files.cert_pem.read_bytes())
    leaf.verify_directly_issued_by(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The key matches, and a real TLS client accepts the pair for both names.
    ctx = ssl.create_default_context(cafile=str(files.ca_pem))
    srv_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    srv_ctx.load_cert_chain(files.cert_pem, files.key_pem)
    for name in ("localhost", "127.0.0.1"):
        ctx.check_hostname = True
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        c = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
        s = srv_ctx.wrap_bio(s_in, s_out, server_side=True)
        for _ in range(10):
            for obj in (c, s):
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            s_in.write(outgoing.read())
            incoming.write(s_out.read())
        c.do_handshake()  # raises if verification failed
    assert oct(files.key_pem.stat().st_mode & 0o777) == "0o600"


# ----------------------------------------------------------------------- challtestsrv DNS


def test_challtestsrv_a_aaaa_defaults_and_no_nxdomain(cts):
    # Unmocked names: A -> default 127.0.0.1, AAAA -> nothing (defaultIPv6 ""), never NXDOMAIN.
    assert query(cts, "nobody.example.test", "A") == ("NOERROR", ["nobody.example.test. A 127.0.0.1"])
    assert query(cts, "nobody.example.test", "AAAA") == ("NOERROR", [])
    assert query(cts, "nobody.example.test", "CNAME") == ("NOERROR", [])
    assert query(cts, "nobody.example.test", "MX")[0] == "NOTIMP"

    cts.add_a("web.example.test", ["192.0.2.10", "192.0.2.11"])
    rcode, ans = query(cts, "web.example.test", "A")
    assert rcode == "NOERROR" and sorted(ans) == ["web.example.test. A 192.0.2.10", "web.example.test. A 192.0.2.11"]
    cts.add_a("web.example.test", "192.0.2.12")  # add-a appends
    assert len(query(cts, "web.example.test", "A")[1]) == 3
    cts.set_a("web.example.test", "192.0.2.13")  # set_a replaces
    assert query(cts, "web.example.test", "A")[1] == ["web.example.test. A 192.0.2.13"]
    # Names are matched case-sensitively by challtestsrv: the upper-case query misses the mock.
    assert query(cts, "WEB.EXAMPLE.TEST", "A")[1] == ["WEB.EXAMPLE.TEST. A 127.0.0.1"]
    cts.clear_a("web.example.test")
    assert query(cts, "web.example.test", "A")[1] == ["web.example.test. A 127.0.0.1"]

    cts.add_aaaa("web.example.test", ["2001:db8::1"])
    assert query(cts, "web.example.test", "AAAA")[1] == ["web.example.test. AAAA 2001:db8::1"]
    cts.set_aaaa("web.example.test", ["2001:db8::2"])
    assert query(cts, "web.example.test", "AAAA")[1] == ["web.example.test. AAAA 2001:db8::2"]
    cts.clear_aaaa("web.example.test")
    assert query(cts, "web.example.test", "AAAA") == ("NOERROR", [])

    with pytest.raises(ValueError):
        cts.add_a("web.example.test", ["2001:db8::1"])  # challtestsrv would silently drop it

    # No default IPv4: unmocked names get NODATA (NOERROR, empty) -- still no NXDOMAIN.
    cts.set_default_ipv4("")
    try:
        assert query(cts, "nobody.example.test", "A") == ("NOERROR", [])
        with pytest.raises(dns.resolver.NoAnswer):
            cts.resolver().resolve("nobody.example.test", "A")
    finally:
        cts.set_default_ipv4("127.0.0.1")
    cts.set_default_ipv4("198.51.100.7")
    try:
        assert query(cts, "nobody.example.test", "A")[1] == ["nobody.example.test. A 198.51.100.7"]
    finally:
        cts.set_default_ipv4("127.0.0.1")


def test_challtestsrv_cname_behaviour(cts):
    cts.add_a("target.example.net", ["203.0.113.5"])
    cts.set_cname("alias.example.com", "target.example.net")
    try:
        # A CNAME query answers just the CNAME.
        assert query(cts, "alias.example.com", "CNAME") == (
            "NOERROR", ["alias.example.com. CNAME target.example.net."])
        # An A query answers the CNAME followed by the target's A records.
        assert query(cts, "alias.example.com", "A") == (
            "NOERROR", ["alias.example.com. CNAME target.example.net.", "target.example.net. A 203.0.113.5"])
        # AAAA: the CNAME only (target has no AAAA, default IPv6 disabled).
        assert query(cts, "alias.example.com", "AAAA") == (
            "NOERROR", ["alias.example.com. CNAME target.example.net."])
        ans = cts.resolver().resolve("alias.example.com", "A")
        assert ans.canonical_name.to_text() == "target.example.net."
        assert [r.to_text() for r in ans] == ["203.0.113.5"]

        # Only one level is followed: alias2 -> alias -> target answers alias's *own* A
        # (the default address), not target's.
        cts.set_cname("alias2.example.com", "alias.example.com")
        assert query(cts, "alias2.example.com", "A") == (
            "NOERROR", ["alias2.example.com. CNAME alias.example.com.", "alias.example.com. A 127.0.0.1"])
    finally:
        cts.clear_cname("alias.example.com")
        cts.clear_cname("alias2.example.com")
        cts.clear_a("target.example.net")
    assert query(cts, "alias.example.com", "CNAME") == ("NOERROR", [])
    assert query(cts, "alias.example.com", "A")[1] == ["alias.example.com. A 127.0.0.1"]


def test_challtestsrv_txt_and_servfail(cts):
    name = "_acme-challenge.txt.example.com"
    assert query(cts, name, "TXT") == ("NOERROR", [])
    cts.set_txt(name, "first")
    assert query(cts, name, "TXT")[1] == [f"{name}. TXT \"first\""]
    cts.add_txt(name, "second")
    assert sorted(query(cts, name, "TXT")[1]) == [f"{name}. TXT \"first\"", f"{name}. TXT \"second\""]
    cts.set_txt(name, "only")  # set = replace
    assert query(cts, name, "TXT")[1] == [f"{name}. TXT \"only\""]
    assert [r.to_text() for r in cts.resolver().resolve(name, "TXT")] == ['"only"']
    cts.clear_txt(name)
    assert query(cts, name, "TXT") == ("NOERROR", [])
    history = cts.dns_request_history(name)
    assert len(history) == 6 and history[0]["Question"]["Name"] == name + "."
    cts.clear_request_history(name)
    assert cts.dns_request_history(name) == []

    cts.add_a("broken.example.com", ["192.0.2.1"])
    cts.set_servfail("broken.example.com")
    try:
        for rdtype in ("A", "AAAA", "CNAME", "TXT"):
            assert query(cts, "broken.example.com", rdtype) == ("SERVFAIL", [])
        with pytest.raises(dns.resolver.NoNameservers):
            cts.resolver().resolve("broken.example.com", "A")
    finally:
        cts.clear_servfail("broken.example.com")
    assert query(cts, "broken.example.com", "A")[1] == ["broken.example.com. A 192.0.2.1"]
    cts.clear_a("broken.example.com")


def test_challtestsrv_lifecycle_and_errors(tmp_path):
    require_pebble()
    srv = ChallTestSrv(work_dir=tmp_path)
    srv.start()
    pid = srv.pid
    assert srv.running and "Starting management server" in srv.log_text()
    srv.stop()
    srv.stop()  # idempotent
    assert not srv.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(DevEnvError, match="not running"):
        srv.add_a("x.example.com", ["192.0.2.1"])


# ----------------------------------------------------------------------- Pebble


def test_pebble_issues_certificate_and_counts(pebble):
    orders0, issued0, authz0 = pebble.order_count(), pebble.issued_count(), pebble.authz_count()
    acme = AcmeTestClient(pebble.directory_url, pebble.ca_bundle).register()
    assert pebble.account_count() >= 1
    fullchain = acme.issue(["shop.example.com", "www.shop.example.com"])
    assert pebble.order_count() == orders0 + 1
    assert pebble.issued_count() == issued0 + 1
    assert pebble.authz_count() == authz0 + 2
    assert pebble.validation_count("valid") >= 2
    assert pebble.request_count("/order-plz", method="POST") >= 1

    leaf, *chain = pem_certs(fullchain)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(names.get_values_for_type(x509.DNSName)) == ["shop.example.com", "www.shop.example.com"]
    # Pebble logs serials with leading zeros ("05eca8..."): compare the numbers, not the strings.
    assert leaf.serial_number in [int(s, 16) for s in pebble.issued_serials()]

    # The chain verifies up to the root from the management API.
    root = x509.load_pem_x509_certificate(pebble.root_pem().encode())
    intermediate = x509.load_pem_x509_certificate(pebble.intermediate_pem().encode())
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    assert chain and chain[-1].verify_directly_issued_by(root) is None
    roots_file = pebble.write_roots(pebble.work_dir / "roots.pem")
    assert x509.load_pem_x509_certificate(roots_file.read_bytes()) == root

    status = pebble.cert_status(format(leaf.serial_number, "x"))
    assert status["Status"] == "Valid"
    acme.acme.revoke(leaf, 0)
    assert pebble.cert_status(leaf.serial_number)["Status"] == "Revoked"
    assert pebble.cert_status("abcdef0123") is None


def test_pebble_options_blocklist_validity_and_port_clash(cts, tmp_path):
    with Pebble(dns_server=cts, work_dir=tmp_path / "p", always_valid=True,
                certificate_validity_period=600, domain_blocklist=["blocked.example"],
                authz_reuse_percent=0, env={"PEBBLE_CHAIN_LENGTH": "2"}) as p:
        cfg = p.config_path.read_text()
        assert '"certificateValidityPeriod": 600' in cfg and "blocked.example" in cfg
        acme = AcmeTestClient(p.directory_url, p.ca_bundle).register()
        with pytest.raises(messages.Error) as err:
            acme.new_order(["www.blocked.example"])
        assert err.value.code == "rejectedIdentifier"
        assert p.order_count() == 0
        leaf = pem_certs(acme.issue(["short.example.com"]))[0]
        assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(seconds=600)
        assert "Generated issuance chain" in p.log_text()

    # A port that is taken is reported with the program's own words.
    with pytest.raises(DevEnvError) as err:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            Pebble(dns_server=cts, work_dir=tmp_path / "clash", port=s.getsockname()[1],
                   management_port=free_port(), start_timeout=5).start()
    assert "address already in use" in str(err.value)


# ----------------------------------------------------------------------- PostgreSQL


def test_postgres_throwaway_cluster(tmp_path, monkeypatch):
    import psycopg

    try:
        find_postgres_bin_dir()
        have_pg = True
    except DevEnvError:
        have_pg = False
    require("PostgreSQL server binaries (initdb, pg_ctl)", have_pg)
    monkeypatch.delenv(TEST_DATABASE_URL_ENV, raising=False)
    server = PostgresServer.for_tests(tmp_path)
    try:
        assert not server.external
        assert server.url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        assert server.port != 5432
        url = server.create_database("edgecert_devenv_test")
        assert url.endswith("/edgecert_devenv_test") and url.startswith("postgresql+psycopg://")
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1), (2)")
            assert conn.execute("SELECT sum(x) FROM t").fetchone()[0] == 3
            assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"

        # EDGECERT_TEST_DATABASE_URL points at an existing server: used as is, never stopped.
        monkeypatch.setenv(TEST_DATABASE_URL_ENV, server.url)
        external = PostgresServer.for_tests(tmp_path / "ext")
        assert external.external and external.url == server.url
        other = external.create_database()
        with psycopg.connect(other.replace("postgresql+psycopg://", "postgresql://")) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == other.rsplit("/", 1)[1]
        external.drop_database(other)
        external.stop()
        server.drop_database(url)
        with psycopg.connect(server.url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            names = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
        assert "edgecert_devenv_test" not in names
    finally:
        server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=2)
