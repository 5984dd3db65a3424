"""Cipher choice as Mozilla's "intermediate" configuration has it: every suite the edge offers is a strong AEAD one,
so the client's order decides (no server preference) -- AES-GCM for a client with AES instructions, ChaCha20 for a
phone without them -- with real ``openssl s_client`` handshakes against both TLS drivers (the C engine, Python's
ssl)."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.helpers import require_binary
from tests.test_fasthttp import NAME, _edge, tls_driver  # noqa: F401  (fixture)


async def _negotiated(port: int, *args: str) -> str:
    p = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", NAME, *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(p.communicate(), 30)
    m = re.search(rb"Cipher is (\S+)", out)
    assert m, out[-600:]
    return m.group(1).decode()


@pytest.mark.parametrize("offer, tls12, want", [
    ("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256", False,
     "TLS_CHACHA20_POLY1305_SHA256"),
    ("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", False, "TLS_AES_128_GCM_SHA256"),
    ("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256", False, "TLS_AES_256_GCM_SHA384"),
    ("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:"
     "ECDHE-RSA-AES256-GCM-SHA384", True, "CHACHA20"),
    ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
     "ECDHE-RSA-CHACHA20-POLY1305", True, "AES128-GCM"),
])
async def test_the_client_s_order_decides(tls_driver, offer, tls12, want):
    require_binary("openssl")
    srv, port, _ = await _edge(None)
    try:
        args = ("-tls1_2", "-cipher", offer) if tls12 else ("-tls1_3", "-ciphersuites", offer)
        assert want in await _negotiated(port, *args)
    finally:
        await srv.stop()
