"""The diagnosis object as the public endpoint hands it out: technical details without Python's exception names,
errno numbers or the internal addresses a fetch was refused for.

``edgecert diagnose`` (run by an operator on their own machine) keeps the raw text; ``GET /v1/diagnose/{hostname}``
may be read by anyone who knows a registered name, tenants included, so every string in its answer goes through
:func:`public_text`: "ConnectionRefusedError: [Errno 111] Connection refused" reads "connection refused", "AIA fetch of
http://x/ca.crt failed: TargetNotAllowed: refusing to probe 10.0.0.7: private address" reads "... failed: not
fetched (it resolves to an internal address)".
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["public_text", "public_json"]

#: Exception class names a diagnosis may carry, and what they mean in words.
_WORDS = {
    "ConnectionRefusedError": "connection refused",
    "ConnectionResetError": "connection reset by the server",
    "ConnectionAbortedError": "connection aborted",
    "BrokenPipeError": "connection closed by the server",
    "TimeoutError": "timed out",
    "timeout": "timed out",
    "gaierror": "the name does not resolve",
    "LifetimeTimeout": "the DNS lookup timed out",
    "NoNameservers": "the DNS servers answered with an error (SERVFAIL)",
    "NXDOMAIN": "the name does not exist in DNS",
    "NoAnswer": "no DNS record of that type",
}
_REFUSED = re.compile(r"(?:TargetNotAllowed:\s*)?refusing to probe \S+?:? [a-z -]*address", re.I)
_CLASS = re.compile(r"\b(?:[a-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Timeout|NotAllowed)|timeout|gaierror|"
                    r"NXDOMAIN|NoAnswer|NoNameservers)(?:\(\))?(?::\s*|\s+(?=\[Errno))")
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")
_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")  # the C source line of Python's ssl module


def public_text(text: str) -> str:
    """``text`` without exception class names, errno numbers and refused internal addresses."""
    if not text:
        return text
    text = _REFUSED.sub("not fetched (it resolves to an internal address)", text)

    def word(m: re.Match) -> str:
        w = _WORDS.get(m.group(1))
        return f"{w}: " if w else ""
    text = _CLASS.sub(word, text)
    text = _ERRNO.sub("", text)
    text = _SOURCE.sub("", text)
    # "connection refused: Connection refused" -> once
    text = re.sub(r"\b([\w ]{6,60}): \1\b", r"\1", text, flags=re.I)
    return text.rstrip(": ").strip()


def public_json(value: Any) -> Any:
    """Every string of a JSON value through :func:`public_text` (keys and the openssl command left alone)."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, dict):
        return {k: (v if k == "openssl_command" else public_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [public_json(v) for v in value]
    return value
