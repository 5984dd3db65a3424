"""The diagnostic engine: probe one TLS endpoint from here and name its failure mode.

``diagnose()`` walks the layers in order (DNS, TCP, TLS handshake, certificate chain, the page), records every
check it made, picks ONE primary failure mode from ``modes.PRIORITY`` (the most fundamental cause) and prints an
``openssl s_client`` command that reproduces the finding from a shell (``command``).

Blocking work (sockets, ``ssl``) runs in threads through ``asyncio.to_thread``; subprocesses and HTTP fetches use
asyncio; every network step is bounded by ``timeout``. The layers: ``target`` (what may be probed), ``dns``,
``connect`` (TCP), ``handshake`` (TLS), ``chain`` and ``certificate`` (the certificates), ``page``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import ssl
from typing import Any
from urllib.parse import urlsplit

from edge.names import format_hostport, parse_hostport

from .addresses import MAX_ADDRESSES, probe_address
from .advice import build_warnings
from .certificate import Offload, certificate_checks, run_in_place
from .chain import iso_utc, normalize_fingerprint, sha256_hex, utc_now, validate_cafile
from .command import curl_command, openssl_command
from .connect import plain_http_probe, tcp_connect
from .dns import DNSResult, dns_lookup, resolve_host
from .handshake import (ALL_CIPHERS, BROWSER_CIPHERS, TLS_VERSIONS, Handshake, classify_handshake, client_context,
                        openssl_status, tls_handshake)
from .modes import FAILURE_MODES, PRIORITY, get_mode
from .page import fetch_page, scan_mixed_content
from .phases import PHASES, phased_probe
from .client_texts import client_error
from .population import FAMILIES, judge, simulate
from .state import State
from .target import TargetNotAllowed, check_allowed, normalize_hostname

__all__ = ["diagnose"]


async def diagnose(
    hostname: str,
    *,
    connect: str | None = None,
    cafile: str | None = None,
    resolver: str | None = None,
    allow_private: bool = True,
    expected_sha256: str | None = None,
    edge_targets: list[str] | None = None,
    timeout: float = 5.0,
    port: int = 443,
    offload: Offload = run_in_place,
) -> dict:
    """Probe ``hostname`` over TLS and name what is wrong.

    Args:
        hostname: the name a visitor types (IDNA allowed; an IP literal is probed without SNI).
        connect: ``HOST:PORT`` to connect to instead of the resolved address (like curl ``--resolve``).
        cafile: PEM bundle replacing the system trust store.
        resolver: ``HOST:PORT`` of the DNS server to ask (default: the system resolver).
        allow_private: when False, refuse loopback/private/link-local/multicast/reserved/metadata targets.
        expected_sha256: SHA-256 of the leaf the edge should serve for the name.
        edge_targets: names or addresses of the edge: a name resolving elsewhere is ``wrong_endpoint`` (and the edge's
            own address is probed for the name, to say whether it is ready for the DNS change).
        timeout: bound of each network step, in seconds.
        offload: runs the decoding of what remote servers send (AIA issuers, CRLs); the API passes its analysis
            workers, so that no hostile CRL parses on its loop.
        port: TLS port when ``connect`` is not given.

    Returns:
        The diagnosis object (see docs/interface.md): ``hostname, ok, failure_mode, summary, fix, who_acts,
        browser_errors, checks, certificate, openssl_command`` plus ``connect``, ``port``, ``checked_at``,
        ``failure_modes`` (every mode found, primary first), ``tls``, ``dns``, and ``clients`` (how each family of
        clients fares: ``population.FAMILIES``), ``addresses`` (each resolved address, and the edge's), ``warnings``,
        ``phases`` (ms at which each phase of the main connection was reached; ``stopped_at``), ``curl_command``.

    Raises:
        ValueError: a malformed hostname, ``connect``, ``resolver``, ``cafile`` or fingerprint.
        TargetNotAllowed: ``allow_private`` is False and the target is a private/special address.
    """
    host = normalize_hostname(hostname)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    if not 0 < int(port) < 65536:
        raise ValueError("port must be 1-65535")
    port = int(port)
    connect_hp = parse_hostport(connect, what="connect target") if connect else None
    if resolver:
        parse_hostport(resolver, what="resolver", default_port=53)
    if cafile:
        validate_cafile(cafile)
    expected = normalize_fingerprint(expected_sha256) if expected_sha256 else None
    try:
        ip_literal = str(ipaddress.ip_address(host))
    except ValueError:
        ip_literal = None
    st = State(hostname=host, port=connect_hp[1] if connect_hp else port)
    started = utc_now()

    # ---- DNS
    dns_res = DNSResult(addresses=[ip_literal]) if ip_literal else await dns_lookup(host, resolver, timeout)
    dns_info: dict[str, Any] = {"addresses": dns_res.addresses, "cnames": dns_res.cnames, "source": dns_res.source}
    wrong_endpoint_detail = None
    if ip_literal:
        st.check("dns", True, f"{host} is an IP address: no DNS lookup")
    elif dns_res.error:
        detail = f"{host} does not resolve ({dns_res.source}): {dns_res.detail}"
        if connect_hp:
            st.check("dns", False, detail + f"; connecting to {connect} as asked", fatal=False)
        else:
            st.check("dns", False, detail)
            st.fail("dns_not_configured")
    else:
        chain = " -> ".join([host] + dns_res.cnames)
        st.check("dns", True, f"{chain} -> {', '.join(dns_res.addresses)} ({dns_res.source})")
    edge_names: set[str] = set()
    edge_addrs: set[str] = set()
    if edge_targets and not ip_literal and not dns_res.error:
        for t in edge_targets:
            t = t.strip()
            if not t:
                continue
            try:
                edge_addrs.add(str(ipaddress.ip_address(t)))
            except ValueError:
                n = normalize_hostname(t)
                edge_names.add(n)
                edge_addrs.update(await resolve_host(n, resolver, timeout))
        via_cname = [c for c in dns_res.cnames if c in edge_names]
        outside = [a for a in dns_res.addresses if a not in edge_addrs]
        if via_cname or not outside:
            st.check("dns_points_to_edge", True,
                     f"{host} points at the edge" + (f" (CNAME {via_cname[0]})" if via_cname else
                                                     f" ({', '.join(dns_res.addresses)})"))
        else:
            where = ", ".join(outside) + (f" via CNAME {' -> '.join(dns_res.cnames)}" if dns_res.cnames else "")
            wrong_endpoint_detail = (f"{host} resolves to {where}, not to the edge "
                                     f"({', '.join(sorted(edge_names | edge_addrs))})")
            if connect_hp:
                st.check("dns_points_to_edge", False, wrong_endpoint_detail + f"; connecting to {connect} as asked",
                         fatal=False)
            else:
                st.check("dns_points_to_edge", False, wrong_endpoint_detail)
                st.fail("wrong_endpoint")
                dns_info["points_to"] = outside

    # ---- where to connect
    if connect_hp:
        targets = await resolve_host(connect_hp[0], resolver, timeout)
        if not targets:
            raise ValueError(f"connect target {connect!r} does not resolve")
        target_port = connect_hp[1]
    else:
        targets = list(dns_res.addresses)
        target_port = port
    check_allowed(targets, allow_private)

    address: str | None = None
    addresses: list[dict] = []
    address_failures: list[dict] = []
    results: dict[str, Any] = {}
    phases_info: dict[str, Any] = {}
    hs_main: Handshake | None = None
    handshakes: dict[str, Handshake] = {}
    cert_obj: dict | None = None
    tls_info: dict[str, Any] = {}
    cmd_hint: dict[str, Any] = {}
    sni = None if ip_literal else host

    if targets:
        # ---- TCP
        tcp_err = None
        tcp_details = []
        for a in targets[:3]:
            kind, detail = await tcp_connect(a, target_port, timeout)
            tcp_details.append(detail)
            if kind is None:
                address, tcp_err = a, None
                break
            if tcp_err is None or (tcp_err == "timeout" and kind == "refused"):
                tcp_err = kind
        if address is None:
            st.check("tcp", False, "; ".join(tcp_details))
            st.fail("connection_refused" if tcp_err == "refused" else
                    "connection_timeout" if tcp_err == "timeout" else "connection_refused")
            cmd_hint["address"] = targets[0]
        else:
            st.check("tcp", True, tcp_details[-1])

    if address is not None:
        # ---- TLS: a browser-like handshake first
        browser_ctx = client_context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3,
                                     BROWSER_CIPHERS + ":@SECLEVEL=0")
        hs_main = await asyncio.to_thread(phased_probe, address, target_port, sni, browser_ctx, timeout, "browser",
                                          host_header=host)
        if not hs_main.ok and hs_main.kind in ("reset", "eof", "oserror", "ssl"):
            # a cut connection may be a moment's trouble (a busy server, a full backlog): look once more
            again = await asyncio.to_thread(phased_probe, address, target_port, sni, browser_ctx, timeout, "browser",
                                            host_header=host)
            if again.ok:
                hs_main = again
        handshakes["browser"] = hs_main
        main_sha = sha256_hex(hs_main.chain[0]) if hs_main.ok and hs_main.chain else None

        probe_jobs: dict[str, Any] = {}
        for vname, v in TLS_VERSIONS.items():
            ctx = client_context(v, v, ALL_CIPHERS)
            probe_jobs[vname] = asyncio.to_thread(tls_handshake, address, target_port, sni, ctx, timeout, vname)
        any_ctx = client_context(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_3, ALL_CIPHERS)
        probe_jobs["no_sni"] = asyncio.to_thread(tls_handshake, address, target_port, None, any_ctx, timeout, "no_sni")
        if hs_main.ok and not ip_literal:
            bogus = f"edgecert-probe-{secrets.token_hex(4)}.invalid"
            probe_jobs["bogus_sni"] = asyncio.to_thread(tls_handshake, address, target_port, bogus, any_ctx, timeout,
                                                        "bogus_sni")
            probe_jobs["openssl"] = openssl_status(address, target_port, sni, timeout)
        if hs_main.ok:
            probe_jobs["page"] = fetch_page(host, address, target_port, timeout)
        if hs_main.kind == "wrong_version":
            probe_jobs["plain"] = asyncio.to_thread(plain_http_probe, address, target_port, host, timeout)
        if hs_main.ok or (hs_main.stopped_at not in ("connect", "first_server_byte") and hs_main.kind != "timeout"):
            # the server talks TLS: replay each client family's ClientHello
            probe_jobs["population"] = simulate(address, target_port, sni, timeout)
        if not connect_hp:
            for a in [t for t in targets if t != address][:MAX_ADDRESSES - 1]:
                probe_jobs[f"address {a}"] = probe_address(a, target_port, host, sni, timeout, role="dns",
                                                           main_sha256=main_sha)
            if edge_addrs and not set(targets) & edge_addrs:
                for a in sorted(edge_addrs)[:2]:
                    try:
                        check_allowed([a], allow_private)  # the same guard as for the name's own addresses
                    except TargetNotAllowed:
                        continue
                    probe_jobs[f"edge {a}"] = probe_address(a, target_port, host, sni, timeout, role="edge",
                                                            main_sha256=main_sha)
        results = dict(zip(probe_jobs, await asyncio.gather(*probe_jobs.values(), return_exceptions=True)))
        for k, v in results.items():
            if isinstance(v, Handshake):
                handshakes[k] = v
        offers = results.get("population") if isinstance(results.get("population"), dict) else {}
        cert_request = any(o.cert_request for o in offers.values())
        phases_info = {"phases": {p: hs_main.phases.get(p) for p in PHASES}, "stopped_at": hs_main.stopped_at}
        st.check("phases", hs_main.stopped_at is None, _phases_text(hs_main, timeout),
                 **({"fatal": False} if hs_main.ok and hs_main.stopped_at == "first_http_byte"
                    and hs_main.post_error is None else {}))

        accepted = {v: handshakes[v] for v in TLS_VERSIONS if handshakes.get(v) and handshakes[v].ok}
        tls_info = {
            "versions": {v: bool(handshakes.get(v) and handshakes[v].ok) for v in TLS_VERSIONS},
            "ciphers": {v: h.cipher for v, h in accepted.items()},
        }
        versions_txt = ", ".join(f"{v} {'yes' if ok else 'no'}" for v, ok in tls_info["versions"].items())

        if hs_main.ok:
            tls_info.update({"version": hs_main.version, "cipher": hs_main.cipher})
            st.check("tls_handshake", True, f"{hs_main.version} {hs_main.cipher} (SNI {sni or 'none'})")
            legacy = [v for v in ("TLSv1.0", "TLSv1.1") if tls_info["versions"].get(v)]
            st.check("tls_versions", True, versions_txt + (
                f"; legacy {' and '.join(legacy)} still enabled (harmless for browsers)" if legacy else ""))
        else:
            mode, detail = classify_handshake(hs_main, handshakes, results.get("plain"), cert_request)
            st.check("tls_handshake", False, detail)
            st.check("tls_versions", False, versions_txt)
            st.fail(mode)
            cmd_hint["stalled"] = hs_main.kind == "timeout"
        if hs_main.ok and hs_main.post_error is not None:
            post = hs_main.post_error
            if post.alert == 116 or (cert_request and post.alert in (40, 42)):
                st.check("client_certificate", False, "the handshake completes, then the server ends the connection "
                         f"at the first request because no client certificate was sent (alert {post.alert}): "
                         f"{post.text}")
                st.fail("client_certificate_required")
            else:
                st.check("http", False, "the server ended the connection at the first request: "
                                        f"{post.text or post.kind}", fatal=False)
        elif hs_main.ok and cert_request:
            st.check("client_certificate", True, "the server asks for a client certificate but accepts visitors "
                                                 "without one (optional client authentication)")

        # ---- certificate
        if hs_main.ok and hs_main.chain:
            cert_obj = await certificate_checks(
                st, hs_main, handshakes, results, cafile=cafile, expected=expected, allow_private=allow_private,
                resolver=resolver, timeout=timeout, cmd_hint=cmd_hint, offload=offload)
        elif hs_main.ok:
            st.check("certificate", False, "the server sent no certificate")
            st.fail("handshake_failure")
        if hs_main.ok and not any(m for m in st.modes if FAILURE_MODES[m].phase == "certificate"):
            _page_check(st, results.get("page"), cmd_hint)

        # ---- every address
        for k, v in results.items():
            if k.startswith(("address ", "edge ")) and isinstance(v, dict):
                addresses.append(v)
        for a in addresses:
            if a["role"] != "dns":
                st.check("edge_address", a["ok"], ("the edge is ready for this name: " if a["ok"] else
                                                   "the edge's own address does not serve this name: ")
                         + a["detail"], fatal=False)
                continue
            st.check("address", a["ok"], a["detail"])
            if not a["ok"]:
                address_failures.append(a)
                st.fail(a["failure_mode"])
                if a["failure_mode"] == "wrong_endpoint" and not dns_info.get("points_to"):
                    dns_info["points_to"] = [a["address"]]
                    wrong_endpoint_detail = (f"{host} also resolves to {a['address']}, which serves another site "
                                             f"({a['detail'].split(': ', 1)[-1]})")
    else:
        offers = {}

    # ---- the client population
    cert_issues = (cert_obj or {}).pop("_issues", []) if cert_obj is not None else []
    chain_notes = (cert_obj or {}).pop("_warnings", []) if cert_obj is not None else []
    addr_modes = {a["failure_mode"] for a in address_failures}
    pre_tls = [m for m in st.modes if FAILURE_MODES[m].phase in ("dns", "tcp") and not (
        m in addr_modes and "points_to" in dns_info and dns_info["points_to"][0] in
        {a["address"] for a in address_failures})] or \
        [m for m in st.modes if m in ("handshake_timeout", "plain_http_on_tls_port", "handshake_failure",
                                      "client_certificate_required") and not offers]
    clients = judge(FAMILIES, offers if not pre_tls else {}, cert_issues if not pre_tls else [], host=host,
                    private_trust=bool(cafile), post_handshake=st.primary() if pre_tls else
                    ("client_certificate_required" if "client_certificate_required" in st.modes else None))
    for a in address_failures[:1]:
        # a visitor's client may pick that address (IPv6 first on most networks): it fails there
        fam = {f.id: f for f in FAMILIES}
        for c in clients:
            if c["ok"]:
                c.update(ok=False, mode=a["failure_mode"],
                         error=client_error(fam[c["client"]].texts, a["failure_mode"], host=host)
                         + f" (when it connects to {a['address']})")
    failing = [c for c in clients if not c["ok"] and c["mainstream"]]
    for c in failing:
        if c["mode"] and c["mode"] not in st.modes:
            st.fail(c["mode"])
            who = [x["label"] for x in failing if x["mode"] == c["mode"]]
            st.check("clients", False, f"{', '.join(who)} fail ({c['mode']}): {c['error']}")
            if c["mode"] in ("cipher_mismatch", "protocol_version_mismatch"):
                cmd_hint["offer"] = True
    if not failing:
        st.check("clients", True, f"every current client family connects ({len(clients)} simulated"
                 + (f"; {len([c for c in clients if not c['ok']])} legacy client(s) fail, see warnings)"
                    if any(not c["ok"] for c in clients) else ")"))
    leaf_after = None
    certs = (cert_obj or {}).pop("_certs", None) if cert_obj else None
    if certs:
        leaf_after = certs[0].not_valid_after_utc
    page = results.get("page") if address is not None else None
    headers = None
    if hs_main is not None and hs_main.http_status:
        headers = hs_main.http_headers
    elif isinstance(page, dict) and isinstance(page.get("headers"), dict):
        headers = page["headers"]
    warnings = build_warnings(leaf_not_after=leaf_after, now=utc_now(), chain_notes=chain_notes,
                              headers=headers if hs_main is not None and hs_main.ok else None,
                              tls_versions=tls_info.get("versions", {}), offers=offers, clients=clients)

    primary = st.primary()
    mode = get_mode(primary)
    command = openssl_command(
        primary, host=host, ip_literal=ip_literal, connect=connect, address=address or cmd_hint.get("address"),
        target_port=target_port if (targets or connect_hp) else port, cafile=cafile, resolver=resolver,
        hint=cmd_hint, wrong_endpoint_addr=(dns_info.get("points_to") or [None])[0])
    summary = mode.summary
    if primary == "wrong_endpoint" and wrong_endpoint_detail:
        summary = f"{mode.summary} Here: {wrong_endpoint_detail}."
    if address is not None:
        addresses.insert(0, {"address": address, "role": "connect" if connect_hp else "dns",
                             "ok": not [m for m in st.modes if m not in addr_modes],
                             "failure_mode": next((m for m in sorted(st.modes, key=PRIORITY.index)
                                                   if m not in addr_modes), None),
                             "detail": "probed in full (the checks above)",
                             "sha256": sha256_hex(hs_main.chain[0]) if hs_main and hs_main.ok and hs_main.chain
                             else None})
    curl_target = None
    if primary == "wrong_endpoint" and dns_info.get("points_to"):
        curl_target = format_hostport(dns_info["points_to"][0], target_port)
    elif connect:
        curl_target = connect.strip()
    elif address:
        curl_target = format_hostport(address, target_port)
    return {
        "hostname": host,
        "ok": primary == "ok",
        "failure_mode": primary,
        "summary": summary,
        "fix": mode.fix,
        "who_acts": mode.who_acts,
        "browser_errors": dict(mode.browser_errors),
        "checks": st.checks,
        "certificate": cert_obj,
        "openssl_command": command,
        "curl_command": curl_command(primary, host=host, ip_literal=ip_literal, target=curl_target,
                                     port=target_port if (targets or connect_hp) else port, cafile=cafile,
                                     hint=cmd_hint),
        "clients": [{"client": c["client"], "ok": c["ok"], "error": c["error"], "label": c["label"],
                     "mainstream": c["mainstream"], "failure_mode": c["mode"], "negotiated": c["negotiated"]}
                    for c in clients],
        "addresses": addresses,
        "warnings": warnings,
        "phases": phases_info,
        "failure_modes": sorted(st.modes, key=lambda m: PRIORITY.index(m)) or ["ok"],
        "connect": format_hostport(address, target_port) if address else (connect or None),
        "port": target_port if (targets or connect_hp) else port,
        "dns": dns_info,
        "tls": tls_info,
        "checked_at": iso_utc(started),
    }


def _page_check(st: State, page: Any, hint: dict) -> None:
    if not isinstance(page, dict) or "error" in page or page.get("redirect"):
        detail = "page not checked"
        if isinstance(page, dict) and page.get("redirect"):
            detail = f"/ redirects to {page['redirect']}: not followed"
            if page["redirect"].lower().startswith("http://"):
                st.check("page", False, f"the HTTPS page redirects to plain http: {page['redirect']}")
                return
        elif isinstance(page, dict) and page.get("error"):
            detail = f"page not fetched: {page['error']}"
        st.check("page", True, detail)
        return
    ctype = page["headers"].get("content-type", "")
    if "html" not in ctype.lower() and not page["body"].lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
        st.check("page", True, f"{page['url']} answered {page['status']} ({ctype or 'no content type'}): no HTML")
        return
    found, upgraded = scan_mixed_content(page["body"], page["headers"])
    if not found:
        st.check("mixed_content", True, f"{page['url']} ({page['status']}) loads no http:// subresource")
        return
    listing = ", ".join(f"<{tag}> {url}" for _k, tag, url in found[:5]) + (" ..." if len(found) > 5 else "")
    if upgraded:
        st.check("mixed_content", True, f"http:// subresources ({listing}) are upgraded by "
                                        "Content-Security-Policy: upgrade-insecure-requests")
        return
    active = [f for f in found if f[0] == "active"]
    st.check("mixed_content", False, f"{page['url']} loads {len(found)} http:// subresource(s)"
                                     f"{' (' + str(len(active)) + ' active, blocked by browsers)' if active else ''}: "
                                     f"{listing}")
    st.fail("mixed_content")
    hint["page_path"] = urlsplit(page["url"]).path or "/"


def _phases_text(hs: Handshake, timeout: float) -> str:
    names = {"connect": "TCP connect", "client_hello_sent": "ClientHello sent",
             "first_server_byte": "first server byte", "handshake_complete": "handshake complete",
             "first_http_byte": "first HTTP byte"}
    done = ", ".join(f"{names[p]} {hs.phases[p]} ms" for p in PHASES if p in hs.phases)
    if hs.stopped_at is None:
        return done + (f" ({hs.http_status})" if hs.http_status else "")
    return (done + "; " if done else "") + f"stopped at: {names.get(hs.stopped_at, hs.stopped_at)} " \
        f"(each phase waits up to {timeout:g} s)"
