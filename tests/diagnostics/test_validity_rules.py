"""The chain rules on minted chains (no network): cross-signed roots, excluded subtrees, intermediates' EKU, the
subtree match, and the client-family verdicts they lead to."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge.diagnostics.population import FAMILIES, CertIssue, judge
from edge.diagnostics.validity import chain_rule_issues, chain_warnings, dns_in_subtree, webpki_verdict

from .population_corpus import DAY, NOW, Mint


def test_dns_subtree_match():
    assert dns_in_subtree("a.example.com", "example.com") and dns_in_subtree("example.com", "example.com")
    assert not dns_in_subtree("badexample.com", "example.com")
    assert dns_in_subtree("a.example.com", ".example.com") and not dns_in_subtree("example.com", ".example.com")


def test_excluded_subtree_and_intermediate_eku(tmp_path):
    m = Mint(tmp_path)
    root = m.cert("r", cn="R", ca=True)
    inter = m.cert("i", cn="I", issuer=root, ca=True)
    # an intermediate that excludes a subtree the leaf is in
    b = m.cert("ex", cn="Excluding", issuer=root, ca=True)
    leaf = m.cert("l", cn="x.blocked.test", issuer=b, names=["x.blocked.test"])
    ex_ca = (x509.CertificateBuilder().subject_name(b.cert.subject).issuer_name(root.cert.subject)
             .public_key(b.key.public_key()).serial_number(99).not_valid_before(NOW - DAY)
             .not_valid_after(NOW + DAY)
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .add_extension(x509.NameConstraints(permitted_subtrees=None,
                                                 excluded_subtrees=[x509.DNSName("blocked.test")]), critical=True)
             .sign(root.key, hashes.SHA256()))
    issues = chain_rule_issues([leaf.cert, ex_ca, root.cert], "x.blocked.test", staple=None)
    assert [i.mode for i in issues] == ["invalid_chain"] and "excluded" in issues[0].detail
    assert issues[0].verify_text == "excluded subtree violation"

    # a leaf whose intermediate is limited to clientAuth: unsuitable for every family
    eku_inter = m.cert("ei", cn="Client Only Inter", issuer=root, ca=True)
    leaf2 = m.cert("l2", cn="ok.test", issuer=inter, names=["ok.test"])
    assert chain_rule_issues([leaf2.cert, inter.cert, root.cert], "ok.test", staple=None) == []
    leaf3 = m.cert("l3", cn="c.test", issuer=eku_inter, names=["c.test"], eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    issues = chain_rule_issues([leaf3.cert, eku_inter.cert, root.cert], "c.test", staple=None)
    assert [i.mode for i in issues] == ["unsuitable_purpose"]
    clients = judge(FAMILIES, {}, issues, host="c.test", private_trust=True)
    assert not any(c["ok"] for c in clients)
    # the strict verifier agrees, and says so in its own words
    der = lambda c: c.public_bytes(serialization.Encoding.DER)  # noqa: E731
    assert webpki_verdict([der(leaf3.cert), der(eku_inter.cert)], [der(root.cert)], "c.test", NOW.timestamp())
    assert webpki_verdict([der(leaf2.cert), der(inter.cert)], [der(root.cert)], "ok.test", NOW.timestamp()) is None


def test_cross_signed_root_and_extra_certificates_are_warnings(tmp_path):
    m = Mint(tmp_path)
    old_root = m.cert("old", cn="Old Root", ca=True)
    key = m.key()
    new_root = m.cert("new", cn="New Root", ca=True, key=key)
    # the same New Root (same name, same key) cross-signed by the old root, expired
    cross = m.cert("cross", cn="New Root", issuer=old_root, ca=True, key=key,
                   not_before=NOW - 400 * DAY, not_after=NOW - 2 * DAY)
    inter = m.cert("inter", cn="Inter", issuer=new_root, ca=True)
    leaf = m.cert("leaf", cn="x.test", issuer=inter, names=["x.test"])
    served = [leaf.cert, inter.cert, cross.cert]
    notes = chain_warnings(served, [leaf.cert, inter.cert, new_root.cert], (new_root.cert,), order_ok=True,
                           now=NOW)
    text = " | ".join(notes)
    assert "New Root is sent cross-signed by" in text and "expired" in text and "fail on its expiry" in text
    assert "not part of the path" in text
    assert chain_rule_issues([leaf.cert, inter.cert, new_root.cert], "x.test", staple=None) == []


def test_legacy_rules_per_family():
    sha1 = CertIssue("weak_signature", "sha1", kind="sha1")
    by = {c["client"]: c for c in judge(FAMILIES, {}, [sha1], host="a.test", private_trust=True)}
    assert not by["chrome"]["ok"] and by["java17"]["ok"] and by["android7"]["ok"]  # jdkCA: private roots pass
    by = {c["client"]: c for c in judge(FAMILIES, {}, [sha1], host="a.test", private_trust=False)}
    assert not by["java17"]["ok"] and "SHA1withRSA" in by["java17"]["error"]
    fetchable = CertIssue("incomplete_chain", "missing", kind="incomplete_fetchable")
    by = {c["client"]: c for c in judge(FAMILIES, {}, [fetchable], host="a.test", private_trust=False)}
    assert by["chrome"]["ok"] and by["firefox"]["ok"] and by["dotnet"]["ok"]
    assert not by["python"]["ok"] and "unable to get local issuer certificate" in by["python"]["error"]
    assert "UNABLE_TO_VERIFY_LEAF_SIGNATURE" in by["node"]["error"]
    by = {c["client"]: c for c in judge(FAMILIES, {}, [fetchable], host="a.test", private_trust=True)}
    assert not by["firefox"]["ok"]  # Firefox preloads public intermediates only
