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
"""

from __future__ import annotations

import shlex

from edge.names import format_hostport

from .handshake import BROWSER_CIPHERS

__all__ = ["openssl_command", "report_command"]

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
        return ["-cipher", BROWSER_CIPHERS]
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
    if mode == "connection_timeout" or (mode == "handshake_failure" and hint.get("stalled")):
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
