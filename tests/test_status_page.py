"""The tenant status page, rendered by a real headless Chromium against a real ``edgecert serve`` + Pebble.

Screenshots at phone size land in ``artifacts/`` (a CI artifact) so a human can look at them.
"""

from __future__ import annotations

import base64
import re
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

from tests.helpers import ADMIN_TOKEN, REPO, require_binary

pytestmark = pytest.mark.real

ARTIFACTS = REPO / "artifacts"
# A 1x1 PNG as the operator's logo (a data: URL: the page must not depend on the network to render).
LOGO = "data:image/png;base64," + base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2b2b1e80000000049454e44ae426082")).decode()
BRAND = {"EDGECERT_STATUS_PAGE_BRAND": "Acme Hosting", "EDGECERT_STATUS_PAGE_COLOR": "#ffcc00",
         "EDGECERT_STATUS_PAGE_LOGO_URL": LOGO}


def chromium(url: str, *args: str, timeout: float = 60) -> str:
    """Run headless Chromium once on ``url``; returns stdout (the DOM with ``--dump-dom``)."""
    exe = require_binary("chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args, url]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


class Dom(HTMLParser):
    """The rendered DOM: text and attributes of every element with an id, and all meta tags."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict] = {}
        self.metas: list[dict] = []
        self.imgs: list[dict] = []
        self._open: list[tuple[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "meta":
            self.metas.append(a)
        if tag == "img":
            self.imgs.append(a)
        if tag in ("meta", "img", "br", "link", "input"):
            return
        if "id" in a:
            self.by_id[a["id"]] = {"attrs": a, "text": ""}
        self._open.append((tag, a.get("id")))

    def handle_endtag(self, tag):
        while self._open:
            t, _ = self._open.pop()
            if t == tag:
                break

    def handle_data(self, data):
        for _, i in self._open:
            if i is not None:
                self.by_id[i]["text"] += data

    def text(self, id_: str) -> str:
        return " ".join(self.by_id[id_]["text"].split())

    def attr(self, id_: str, name: str) -> str | None:
        return self.by_id[id_]["attrs"].get(name)


def render(edge, hostname: str, shot: str) -> Dom:
    ARTIFACTS.mkdir(exist_ok=True)
    url = f"{edge.api}/status/{hostname}"
    png = ARTIFACTS / shot
    png.unlink(missing_ok=True)
    chromium(url, f"--screenshot={png}", "--window-size=390,844")  # what a phone shows first
    assert png.stat().st_size > 5000  # a real picture, not an empty page
    full = ARTIFACTS / shot.replace(".png", "-full.png")
    chromium(url, f"--screenshot={full}", "--window-size=390,2400")  # the whole page, phone width
    return Dom(chromium(url, "--dump-dom"))


def assert_no_secrets(html: str, edge, *, tenant: str, tenant_token: str) -> None:
    for secret in (ADMIN_TOKEN, tenant_token, "PRIVATE KEY", "secret.key", f":{edge.https_port}",
                   f":{edge.api_port}"):
        assert secret not in html, secret
    assert tenant not in html  # the tenant's name is the operator's business
    assert "<script" not in html.lower()


@pytest.mark.slow
def test_pending_domain_shows_step_one_and_the_exact_record(edge_factory, dns):
    edge = edge_factory(**BRAND)
    host = "pending.status.test"
    dns.add_a(host, ["192.0.2.10"])  # points elsewhere: stays pending_dns
    st, t = edge.call("POST", "/v1/tenants", {"name": "zeta-shops"})
    assert st == 201
    edge.add_domain(host, tenant="zeta-shops")
    edge.wait_for(lambda: edge.domain(host)["dns"]["observed"], what="a DNS check")
    assert edge.domain(host)["status"] == "pending_dns"

    dom = render(edge, host, "status-pending-phone.png")
    assert dom.attr("step-dns", "data-state") == "current"
    assert dom.attr("step-dns", "aria-current") == "step"
    assert "In progress" in dom.text("step-dns")
    assert dom.attr("step-cert", "data-state") == "todo" and dom.attr("step-serve", "data-state") == "todo"
    assert dom.text("dns-record") == f"{host}. CNAME edge.test."
    assert [dom.text(i) for i in ("dns-type", "dns-name", "dns-value")] == ["CNAME", host, "edge.test."]
    assert "192.0.2.10" in dom.text("dns-observed")
    assert dom.text("status") == "pending dns"
    assert "192.0.2.10" in dom.text("problem") and f"{host}. CNAME edge.test." in dom.text("problem")
    assert "you (the owner of the domain)" in dom.text("who")
    assert any(m.get("http-equiv") == "refresh" for m in dom.metas)  # refreshes itself while pending
    assert dom.text("openssl-command") == (f"openssl s_client -connect {host}:443 -servername {host} "
                                           f"-verify_hostname {host} -verify_return_error -showcerts </dev/null")
    # Branding: name, logo, colour, readable text colour on a light brand colour.
    st, html = edge.call("GET", f"/status/{host}", token=None)
    assert st == 200
    assert "Acme Hosting" in html and "--brand: #ffcc00" in html and "--on-brand: #111111" in html
    assert any(i.get("src") == LOGO for i in (dom.imgs))
    assert_no_secrets(html, edge, tenant="zeta-shops", tenant_token=t["token"])


@pytest.mark.slow
def test_active_domain_shows_serving_done_and_days_to_expiry(edge_factory, dns):
    edge = edge_factory(**BRAND)
    host = "live.status.test"
    edge.add_domain(host, tenant="eta-shops")
    d = edge.wait_status(host, "active")

    dom = render(edge, host, "status-active-phone.png")
    assert [dom.attr(i, "data-state") for i in ("step-dns", "step-cert", "step-serve")] == ["done"] * 3
    assert dom.text("status") == "active"
    days = int(dom.attr("days-left", "data-days"))  # whole days: never "89.0"
    expected_days = d["certificate"]["days_left"]
    assert abs(days - expected_days) <= 1 and days > 0
    assert re.fullmatch(r"in (\d+ days|about \d+ (months|years) \(\d+ days\))", dom.text("days-left")), dom.text("days-left")
    assert re.search(r"expires in (\d+ days|about \d+ (months|years) \(\d+ days\))", dom.text("step-days"))
    assert not re.search(r"\d\.\d", dom.text("days-left") + dom.text("step-days"))
    assert dom.attr("status", "data-tone") == "ok" and dom.attr("now-card", "data-tone") == "ok"
    assert "Everything is working" in dom.text("now-card")
    assert not any(m.get("http-equiv") == "refresh" for m in dom.metas)  # nothing pending: no refresh
    assert "Certificate issued." in dom.text("activity")
    st, html = edge.call("GET", f"/status/{host}", token=None)
    assert st == 200 and d["certificate"]["serial"] in html and d["certificate"]["issuer"] in html
    assert_no_secrets(html, edge, tenant="eta-shops", tenant_token="ect_")


def test_unknown_domain_page_is_404_and_plain(edge):
    st, html = edge.call("GET", "/status/nobody.status.test", token=None)
    assert st == 404
    assert "This domain is not registered here" in html and "nobody.status.test" in html
    st, html = edge.call("GET", "/status/<script>alert(1)</script>", token=None)
    assert st == 404 and "<script>" not in html
