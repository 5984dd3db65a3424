"""The shell line that reproduces a finding: ``openssl s_client`` (and ``timeout`` / ``grep``) for a diagnosis
(:func:`openssl_command`) and for a triaged report (:func:`report_command`).

The ``openssl_command`` choices, per mode (all run as printed under ``sh``):
- base: ``openssl s_client -connect HOST:PORT -servername NAME -verify_hostname NAME -verify_return_error
  [-CAfile PEM] -showcerts -status </dev/null``. HOST is the ``connect`` target when given, the address we
  resolved when a custom ``resolver`` was used (the local resolver may not know the name), the name otherwise.
- several certificate problems at once (e.g. a default certificate that is also self-signed): without
  ``-verify_return_error``, so OpenSSL prints every ``verify error:num=N`` instead of stopping at the first.
- ``revoked`` through a CRL: ``-crl_check -crl_download`` (OpenSSL fetches the CRL from the distribution point:
  ``verify error:num=23``); through a stapled OCSP response: ``-status`` shows ``Cert Status: revoked``.
- ``weak_key`` / ``weak_signature``: ``-auth_level 2`` so the result does not depend on the local openssl.cnf.
- ``protocol_version_mismatch``: ``-no_tls1 -no_tls1_1`` (what browsers offer): ``alert number 70``.
- ``cipher_mismatch``: ``-cipher`` with the browsers' TLS 1.2 suites: ``alert number 40``.
- ``connection_timeout`` / a stalled handshake: wrapped in ``timeout 10`` and prints ``timed out`` when it fires.
- ``dns_not_configured``: ``-connect NAME:PORT`` fails to resolve (``BIO_lookup_ex ... Name or service not known``).
- ``wrong_endpoint``: connects to the address the name resolves to, showing the certificate served there.
- ``mixed_content``: fetches the page through ``openssl s_client -quiet`` and greps the ``http://`` subresources.
- ``client_certificate_required``: sends a request (``printf ... |``) so that a TLS 1.3 server's alert 116 shows;
  the transcript shows ``Acceptable client certificate CA names`` (the CertificateRequest).
- ``alpn_mismatch``: ``-alpn h2,http/1.1`` (what browsers offer): ``alert number 120``.
- ``handshake_timeout``: wrapped in ``timeout 5``: ``CONNECTED(...)`` and nothing more, then ``timed out``.
- ``unsuitable_purpose``: ``-purpose sslserver`` with ``-verify_return_error``: ``verify error:num=26``.
- ``invalid_chain``: ``-verify_return_error``: ``num=24``/``79`` (not a CA), ``25`` (path length), ``47`` (name
  constraints).
- ``must_staple_missing``: the transcript (``OCSP response: no response sent``, copied to stderr by ``tee``) piped
  into ``openssl x509 -ext tlsfeature``, which shows the leaf's ``status_request`` demand.
- ``cipher_mismatch``: the whole browser offer (``-cipher``, ``-ciphersuites``, ``-groups``, ``-sigalgs``), so
  that a server that needs a group or a signature algorithm browsers do not offer fails as they do.

``curl_command`` is the same finding through curl (``--connect-to`` for the address, ``--cacert``, and per mode
``--cert-status``, ``--max-time 5``, the browsers' ciphers and curves).
"""

from __future__ import annotations

import shlex

from edge.names import format_hostport

from .population import FAMILIES

__all__ = ["openssl_command", "report_command", "curl_command", "browser_offer_args"]

_REQUEST = "HEAD / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n"


def browser_offer_args() -> list[str]:
    """``s_client`` options that offer exactly what current browsers offer (``population.FAMILIES`` "chrome")."""
    o = FAMILIES[0].offer
    return ["-min_protocol", o.min_version, "-max_protocol", o.max_version, "-cipher", o.ciphers or "DEFAULT",
            "-ciphersuites", o.suites or "", "-groups", o.groups or "", "-sigalgs", o.sigalgs or ""]

#: What ``grep -Eio`` prints of a page: the elements that load an ``http://`` URL.
_INSECURE_SUBRESOURCE = "<[a-z]+[^>]*(src|href|action|data|srcset)=[\"']?http://[^\"' >]*"


def _mode_flags(mode: str, crl_check: str | None) -> list[str]:
    """The ``s_client`` options that make ``mode`` show (``crl_check``: the CRL option, None for no CRL check)."""
    if mode == "revoked":
        return [crl_check, "-crl_download"] if crl_check else []
    if mode in ("weak_key", "weak_signature"):
        return ["-auth_level", "2"]
    if mode == "protocol_version_mismatch":
        return ["-no_tls1", "-no_tls1_1"]
    if mode == "cipher_mismatch":
        return browser_offer_args()
    if mode == "alpn_mismatch":
        return ["-alpn", "h2,http/1.1"]
    if mode == "unsuitable_purpose":
        return ["-purpose", "sslserver"]
    return []


def _timed(line: str, message: str) -> str:
    """``line`` bounded to 10 s, printing ``message`` when the bound fires."""
    return f"timeout 10 {line}; [ $? -ne 124 ] || echo " + shlex.quote(message)


def _page_grep(host: str, path: str, s_client: list[str]) -> str:
    """GET ``path`` through ``s_client`` (``-quiet``) and grep the insecure subresources."""
    req = f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n"
    return (f"printf {shlex.quote(req)} | {shlex.join(s_client)} 2>/dev/null | "
            f"grep -Eio {shlex.quote(_INSECURE_SUBRESOURCE)}")


def openssl_command(mode: str, *, host: str, ip_literal: str | None, connect: str | None,
                    address: str | None, target_port: int, cafile: str | None, resolver: str | None, hint: dict,
                    wrong_endpoint_addr: str | None) -> str:
    """ONE shell line that reproduces the finding (see the module docstring for the choices)."""
    port = target_port
    if mode == "dns_not_configured":
        hostport = format_hostport(host, port)
    elif mode == "wrong_endpoint" and wrong_endpoint_addr:
        hostport = format_hostport(wrong_endpoint_addr, port)
    elif connect:
        hostport = connect.strip()
    elif ip_literal:
        hostport = format_hostport(ip_literal, port)
    elif resolver and address:
        hostport = format_hostport(address, port)
    else:
        hostport = format_hostport(host, port)

    args = ["openssl", "s_client", "-connect", hostport]
    if not ip_literal:
        args += ["-servername", host, "-verify_hostname", host]
    else:
        args += ["-verify_ip", ip_literal]
    problems = [p for p in hint.get("cert_problems", []) if p != "hostname_cn_only"]
    return_error = not (len(problems) > 1 or mode in ("default_certificate", "wrong_endpoint"))
    if return_error:
        args.append("-verify_return_error")
    if cafile:
        args += ["-CAfile", cafile]
    args += ["-showcerts", "-status"]
    via = hint.get("revoked_via", "")
    args += _mode_flags(mode, ("-crl_check_all" if via == "crl_all" else "-crl_check") if via.startswith("crl")
                        else None)
    line = shlex.join(args) + " </dev/null"
    if mode == "handshake_timeout":
        line = f"timeout 5 {line}; [ $? -ne 124 ] || echo " + shlex.quote(
            f"timed out: {hostport} accepted the connection but the TLS handshake did not complete within 5 s")
    elif mode == "client_certificate_required":
        req = _REQUEST.format(host=host if not ip_literal else ip_literal)
        line = f"printf {shlex.quote(req)} | {shlex.join(args + ['-ign_eof'])} 2>&1"
    elif mode == "unsuitable_purpose":
        # the verify error (num=26) when OpenSSL sees it, and the leaf's usages for what only browsers refuse
        line = (f"{shlex.join(args)} </dev/null 2>&1 | tee /dev/stderr | "
                "openssl x509 -noout -ext keyUsage,extendedKeyUsage")
    elif mode == "must_staple_missing":
        line = (f"{shlex.join(args)} </dev/null 2>&1 | tee /dev/stderr | "
                "openssl x509 -noout -ext tlsfeature")
    elif mode == "connection_timeout" or (mode == "handshake_failure" and hint.get("stalled")):
        line = _timed(line, f"timed out: no answer from {hostport} within 10 s")
    elif mode == "mixed_content":
        q = ["openssl", "s_client", "-connect", hostport, "-quiet"]
        if not ip_literal:
            q += ["-servername", host]
        if cafile:
            q += ["-CAfile", cafile]
        line = _page_grep(host, hint.get("page_path", "/"), q)
    return line


def report_command(mode: str, host: str) -> str:
    """The line to run from the affected network for a triaged report (port 443, the name as given)."""
    base = ["openssl", "s_client", "-connect", f"{host}:443", "-servername", host, "-verify_hostname", host]
    tail = ["-showcerts", "-status"]
    if mode in ("tls_interception", "client_clock_skew"):
        line = shlex.join(base + tail) + " </dev/null 2>&1 | " + shlex.join(
            ["openssl", "x509", "-noout", "-subject", "-issuer", "-dates"])
        return ("date -u; " + line) if mode == "client_clock_skew" else line
    if mode == "mixed_content":
        return _page_grep(host, "/", ["openssl", "s_client", "-connect", f"{host}:443", "-servername", host,
                                      "-quiet"])
    return_error = [] if mode in ("default_certificate", "wrong_endpoint") else ["-verify_return_error"]
    line = shlex.join(base + return_error + tail + _mode_flags(mode, "-crl_check")) + " </dev/null"
    if mode in ("connection_timeout",):
        line = _timed(line, "timed out: no answer within 10 s")
    return line


def curl_command(mode: str, *, host: str, ip_literal: str | None, target: str | None, port: int,
                 cafile: str | None, hint: dict) -> str:
    """The same finding through curl: ONE shell line (``--connect-to`` sends it to ``target`` = ``HOST:PORT``)."""
    url_host = f"[{ip_literal}]" if ip_literal and ":" in ip_literal else (ip_literal or host)
    url = f"https://{url_host}/" if port == 443 else f"https://{url_host}:{port}/"
    args: list[str] = []
    if target and not ip_literal and mode != "dns_not_configured":
        args += ["--connect-to", f"{host}:{port}:{target}"]
    if cafile:
        args += ["--cacert", cafile]
    if mode in ("handshake_timeout", "connection_timeout"):
        args += ["--max-time", "5"]
    else:
        args += ["--max-time", "15"]
    if mode == "must_staple_missing":
        args.append("--cert-status")
    elif mode == "cipher_mismatch":
        o = FAMILIES[0].offer
        args += ["--tlsv1.2", "--ciphers", o.ciphers or "DEFAULT", "--curves", o.groups or "X25519"]
    elif mode == "protocol_version_mismatch":
        args.append("--tlsv1.2")
    elif mode == "revoked" and hint.get("revoked_via") == "ocsp":
        args.append("--cert-status")
    if mode == "mixed_content":
        return shlex.join(["curl", "-sS", *args, url]) + f" | grep -Eio {shlex.quote(_INSECURE_SUBRESOURCE)}"
    return shlex.join(["curl", "-sS", "-o", "/dev/null", "-w", "HTTP %{http_code}\\n", *args, url])
