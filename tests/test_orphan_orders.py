"""``AcmeSession.find_open_order``: the account's orders list read for an order a lost newOrder answer left behind
(the real-CA tests are in tests/test_order_faults.py). Here a stand-in for the CA's answers checks the odd cases:
either end of the list, paging, answers that are not JSON objects, orders that are not open or not for these names."""

from __future__ import annotations

import json

from acme import messages

from acme_client.client import ORPHAN_SCAN_LIMIT, AcmeSession


class _Resp:
    def __init__(self, body, links=None):
        self._body = body
        self.links = links or {}
        self.status_code = 200
        self.headers = {}

    def json(self):
        if isinstance(self._body, (bytes, str)):
            return json.loads(self._body)
        return self._body


class _Client:
    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def _post_as_get(self, url):
        self.asked.append(url)
        return self.answers[url]


def _order(status, *names):
    return {"status": status, "identifiers": [{"type": "dns", "value": n} for n in names],
            "authorizations": [], "finalize": "https://ca/finalize/x"}


def _session(answers) -> AcmeSession:
    s = object.__new__(AcmeSession)
    s.net = type("Net", (), {"account": messages.RegistrationResource(uri="https://ca/acct/1",
                                                                      body=messages.Registration())})()
    s.client = _Client(answers)
    s.last_response = None
    s._on_request = None
    s.directory_url = "https://ca/dir"
    return s


def test_finds_the_open_order_for_exactly_these_names_at_either_end_of_a_paged_list():
    many = [f"https://ca/order/{i}" for i in range(3 * ORPHAN_SCAN_LIMIT)]
    answers = {"https://ca/acct/1": _Resp({"orders": "https://ca/orders/1"}),
               "https://ca/orders/1": _Resp({"orders": many[:40]}, {"next": {"url": "https://ca/orders/1?p=2"}}),
               "https://ca/orders/1?p=2": _Resp({"orders": many[40:]})}
    for u in many:
        answers[u] = _Resp(_order("valid", "shop.example.com"))
    answers[many[0]] = _Resp(_order("pending", "shop.example.com", "www.shop.example.com"))  # other names
    answers[many[1]] = _Resp(_order("invalid", "shop.example.com"))                           # not open
    answers[many[2]] = _Resp(b"not json")                                                     # odd answer
    answers[many[3]] = _Resp(["not", "an", "object"])
    answers[many[4]] = _Resp(_order("ready", "SHOP.example.com"))                             # the orphan
    s = _session(answers)
    found = s.find_open_order(["shop.example.com"])
    assert found is not None and found.uri == many[4] and found.body.status == messages.STATUS_READY
    assert len(s.client.asked) <= 3 + 2 * ORPHAN_SCAN_LIMIT  # bounded: account, two pages, the candidates


def test_no_list_or_no_match_is_none():
    assert _session({"https://ca/acct/1": _Resp({"status": "valid"})}).find_open_order(["a.example"]) is None
    assert _session({"https://ca/acct/1": _Resp(b"<html>")}).find_open_order(["a.example"]) is None
    answers = {"https://ca/acct/1": _Resp({"orders": "https://ca/o"}), "https://ca/o": _Resp({"orders": "x"})}
    assert _session(answers).find_open_order(["a.example"]) is None
    answers = {"https://ca/acct/1": _Resp({"orders": "https://ca/o"}),
               "https://ca/o": _Resp({"orders": ["https://ca/1"]}),
               "https://ca/1": _Resp(_order("valid", "a.example"))}
    assert _session(answers).find_open_order(["a.example"]) is None  # a valid order is a finished one
