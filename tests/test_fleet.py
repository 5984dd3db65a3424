"""Fleet operations over a real ``edgecert serve``: paginated, naturally ordered, filtered listing
(``GET /v1/domains``), the batch endpoint, and the CLI's ``domains list --all`` / ``import`` / ``export``.

The names do not point at the edge: they stay ``pending_dns``, which is all these tests need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.helpers import ADMIN_TOKEN, EdgeProcess

N = 250
NAMES = [f"d{i}.fleet.example.com" for i in range(1, N + 1)]


def call(edge: EdgeProcess, method: str, path: str, body=None, *, token: str = ADMIN_TOKEN):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(edge.api + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def get(edge: EdgeProcess, params: dict, *, token: str = ADMIN_TOKEN):
    return call(edge, "GET", "/v1/domains?" + urllib.parse.urlencode(params), token=token)


@pytest.fixture(scope="module")
def edge(tmp_path_factory, pebble, dns):
    # Every name resolves to 127.0.0.1 in the test DNS; the edge target of this server is elsewhere, so no name
    # points at it and nothing is ordered.
    dns.add_a("edge.fleet.test", ["192.0.2.77"])
    p = EdgeProcess(work_dir=tmp_path_factory.mktemp("fleet") / "edge", pebble=pebble, dns=dns,
                    env={"EDGECERT_EDGE_TARGET": "edge.fleet.test", "EDGECERT_SWEEP_INTERVAL": "30", "EDGECERT_DNS_RECHECK_INITIAL": "300",
                         "EDGECERT_DNS_RECHECK_MAX": "600"}).start()
    # Inserted in a shuffled (reverse) order: the listing order must not depend on insertion.
    for i in range(0, N, 100):
        chunk = list(reversed(NAMES))[i:i + 100]
        st, body = call(p, "POST", "/v1/domains/batch",
                        {"domains": [{"hostname": h, "tenant": "fleet-a" if n % 2 else "fleet-b"}
                                     for n, h in enumerate(chunk, start=i)]})
        assert st == 200, body
        assert {r["result"] for r in body["results"]} == {"added"}, body
    yield p
    p.stop()


def cli(edge: EdgeProcess, *args: str, stdin: str | None = None, token: str = ADMIN_TOKEN):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
    env.update(EDGECERT_API_URL=edge.api, EDGECERT_ADMIN_TOKEN=token)
    return subprocess.run([sys.executable, "-m", "edge", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=300)


def walk(edge: EdgeProcess, params: dict, *, token: str = ADMIN_TOKEN) -> tuple[list[str], list[dict]]:
    seen, pages, cursor = [], [], None
    while True:
        st, body = get(edge, {**params, **({"cursor": cursor} if cursor else {})}, token=token)
        assert st == 200, body
        assert body["count"] == len(body["domains"])
        pages.append(body)
        seen += [d["hostname"] for d in body["domains"]]
        cursor = body["next"]
        if cursor is None:
            return seen, pages


def test_pages_walk_every_domain_once_in_natural_order(edge):
    seen, pages = walk(edge, {"limit": 100, "prefix": "d"})
    assert seen == NAMES  # d1 < d2 < ... < d9 < d10 < ... < d99 < d100 ... (natural, not text, order)
    assert [p["count"] for p in pages] == [100, 100, 50]
    assert {p["total"] for p in pages} == {N}
    st, body = get(edge, {})  # default page size 100
    assert st == 200 and body["count"] == 100 and body["total"] == N and body["next"]


def test_limit_is_capped_and_offset_still_works(edge):
    st, body = get(edge, {"limit": 5000})
    assert st == 200 and body["count"] == N and body["next"] is None  # capped at 1000 > 250
    st, body = get(edge, {"limit": 10, "offset": 95})
    assert st == 200 and [d["hostname"] for d in body["domains"]] == NAMES[95:105] and body["total"] == N


def test_filters(edge):
    st, body = get(edge, {"q": "d2", "limit": 1000})
    want = [h for h in NAMES if "d2" in h]
    assert [d["hostname"] for d in body["domains"]] == want and body["total"] == len(want)
    st, body = get(edge, {"prefix": "d24", "limit": 1000})
    assert [d["hostname"] for d in body["domains"]] == [h for h in NAMES if h.startswith("d24")]
    seen, pages = walk(edge, {"tenant": "fleet-a", "limit": 40})
    assert len(seen) == pages[0]["total"] == N // 2 and len(set(seen)) == len(seen)
    from store.models import DomainStatus
    by_status = {s: get(edge, {"status": s, "limit": 1000})[1] for s in DomainStatus.ALL}
    assert sum(b["total"] for b in by_status.values()) == N  # names not pointing at the edge: none is active
    assert all(d["status"] == s for s, b in by_status.items() for d in b["domains"])
    assert by_status["active"]["total"] == 0 and by_status["active"]["next"] is None
    st, body = get(edge, {"q": "%", "limit": 1000})  # LIKE wildcards are literal
    assert st == 200 and body["total"] == 0


@pytest.mark.parametrize("params,code", [({"status": "bogus"}, "invalid_status"),
                                         ({"tenant": "no-such-tenant"}, "unknown_tenant"),
                                         ({"cursor": "not-a-cursor"}, "invalid_cursor"),
                                         ({"limit": "0"}, "invalid_query")])
def test_bad_filters_are_422(edge, params, code):
    st, body = get(edge, params)
    assert st == 422 and set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]


def test_tenant_token_sees_only_its_own_and_learns_nothing_of_others(edge):
    st, t = call(edge, "POST", "/v1/tenants", {"name": "fleet-a"})
    assert st in (200, 201), t
    seen, pages = walk(edge, {"limit": 100}, token=t["token"])
    assert len(seen) == N // 2 and pages[0]["total"] == N // 2
    st, own = get(edge, {"tenant": "fleet-a"}, token=t["token"])
    assert st == 200 and own["total"] == N // 2
    st, other = get(edge, {"tenant": "fleet-b"}, token=t["token"])
    st2, missing = get(edge, {"tenant": "fleet-zzz"}, token=t["token"])
    assert st == st2 == 422
    assert other["error"]["code"] == missing["error"]["code"] == "unknown_tenant"
    assert other["error"]["message"].replace("fleet-b", "X") == missing["error"]["message"].replace("fleet-zzz", "X")


def test_cli_list_first_page_says_how_many_more(edge):
    r = cli(edge, "domains", "list", "--prefix", "d")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["HOSTNAME", "TENANT", "STATUS"]
    assert [ln.split()[0] for ln in lines[1:]] == NAMES[:100]
    assert "150 more" in r.stderr and "--all" in r.stderr and "--limit" in r.stderr


def test_cli_list_all_walks_every_page(edge):
    r = cli(edge, "domains", "list", "--all", "--limit", "70", "--prefix", "d")
    assert r.returncode == 0, r.stderr
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == NAMES
    assert "more" not in r.stderr
    r = cli(edge, "domains", "list", "--all", "--json", "--limit", "100", "--tenant", "fleet-b")
    doc = json.loads(r.stdout)
    assert doc["count"] == doc["total"] == len(doc["domains"]) == N // 2 and doc["next"] is None
    r = cli(edge, "domains", "list", "--status", "bogus")
    assert r.returncode != 0 and "invalid_status" in r.stderr and "Traceback" not in r.stderr


def test_batch_checks_settings_and_refuses_bad_items_alone(edge):
    st, body = call(edge, "POST", "/v1/domains/batch", {"domains": [
        {"hostname": "b1.batch.example.com", "tenant": "batch"},
        {"hostname": "b2.batch.example.com", "tenant": "batch", "origin": "ftp://o.example"},
        {"hostname": "b3.batch.example.com", "tenant": "batch", "metadata": {"plan": 5}},
        {"hostname": "b4.batch.example.com", "tenant": "batch", "validation": "carrier-pigeon"},
        {"hostname": "10.0.0.1", "tenant": "batch"},
        {"hostname": "b1.batch.example.com", "tenant": "batch"},
        {"hostname": "b1.batch.example.com", "tenant": "other-tenant"},
        "not an object",
        {"hostname": "b6.batch.example.com", "tenant": "batch", "origin": "https://o.example/",
         "metadata": {"plan": "gold"}, "min_tls_version": "1.3"}]})
    assert st == 200, body
    res = [(r["result"], (r.get("error") or {}).get("code")) for r in body["results"]]
    assert res == [("added", None), ("refused", "invalid_origin"), ("refused", "invalid_metadata"),
                   ("refused", "invalid_validation"), ("refused", "ip_literal"), ("exists", None),
                   ("refused", "already_exists"), ("refused", "invalid_item"), ("added", None)]
    assert body["results"][1]["error"]["field"] == "origin"
    for h in ("b2", "b3", "b4"):  # nothing stored for a refused item
        assert call(edge, "GET", f"/v1/domains/{h}.batch.example.com")[0] == 404
    st, d = call(edge, "GET", "/v1/domains/b6.batch.example.com")
    assert (d["origin"], d["metadata"], d["min_tls_version"]) == ("https://o.example", {"plan": "gold"}, "1.3")
    st, body = call(edge, "POST", "/v1/domains/batch",
                    {"domains": [{"hostname": f"x{i}.example.com", "tenant": "t"} for i in range(501)]})
    assert st == 422 and body["error"]["code"] == "batch_too_large"
    assert call(edge, "GET", "/v1/domains/x1.example.com")[0] == 404
    st, body = call(edge, "POST", "/v1/domains", {"hostname": "b5.batch.example.com", "tenant": "batch",
                                                  "origin": "https://user:secret@o.example"})
    assert st == 422 and body["error"]["code"] == "invalid_origin"  # the single add: the very same check
    assert "secret" not in body["error"]["message"]


@pytest.mark.parametrize("params,field", [({"expiring_before": "next tuesday"}, "expiring_before"),
                                          ({"expiring_before": "2027-13-01"}, "expiring_before"),
                                          ({"probe": "broken"}, "probe"),
                                          ({"metadata": "plan"}, "metadata"),
                                          ({"metadata": "=gold"}, "metadata"),
                                          ({"issuer": "x" * 501}, "issuer")])
def test_bad_fleet_filters_are_422_naming_the_parameter(edge, params, field):
    st, body = get(edge, params)
    assert st == 422 and body["error"]["code"] == "invalid_query" and body["error"]["field"] == field, body
    assert field in body["error"]["message"]


def test_fleet_filters_over_the_api_and_the_cli(edge):
    # None of these names has a certificate: issuer / expiring_before match nothing; probe unknown is all of them.
    assert get(edge, {"issuer": "Pebble"})[1]["total"] == 0
    assert get(edge, {"expiring_before": "30d"})[1]["total"] == 0
    assert get(edge, {"expiring_before": "2999-01-01"})[1]["total"] == 0
    st, body = get(edge, {"probe": "unknown", "prefix": "d", "limit": 1})
    assert st == 200 and body["total"] == N
    assert get(edge, {"probe": "failing"})[1]["total"] == 0
    st, d = call(edge, "PATCH", f"/v1/domains/{NAMES[4]}", {"metadata": {"plan": "gold", "region": "eu"}})
    assert st == 200 and d["metadata"] == {"plan": "gold", "region": "eu"}
    st, d = call(edge, "PATCH", f"/v1/domains/{NAMES[6]}", {"metadata": {"plan": "gold"}})
    st, body = get(edge, {"metadata": "plan=gold", "prefix": "d"})
    assert [x["hostname"] for x in body["domains"]] == [NAMES[4], NAMES[6]] and body["total"] == 2
    assert get(edge, {"metadata": "region=eu"})[1]["total"] == 1
    assert get(edge, {"metadata": "plan=gol"})[1]["total"] == 0  # exact values, not substrings
    r = cli(edge, "domains", "list", "--metadata", "plan=gold", "--prefix", "d", "--json")
    assert r.returncode == 0 and [x["hostname"] for x in json.loads(r.stdout)["domains"]] == [NAMES[4], NAMES[6]]
    r = cli(edge, "domains", "list", "--probe", "failing", "--expiring-before", "30")
    assert r.returncode == 0 and "0 domains" in r.stderr, r.stderr
    r = cli(edge, "domains", "list", "--expiring-before", "soon")
    assert r.returncode == 1 and "invalid_query" in r.stderr and "expiring_before" in r.stderr
    r = cli(edge, "domains", "set", NAMES[6], "--metadata", "")
    assert r.returncode == 0, r.stderr
    assert call(edge, "GET", f"/v1/domains/{NAMES[6]}")[1]["metadata"] == {}


@pytest.mark.slow
def test_cli_import_jsonl_and_csv_rerun_and_refusals(edge, tmp_path):
    jl = tmp_path / "fleet.jsonl"
    jl.write_text("".join(json.dumps({"hostname": f"j{i}.import.example.com", "tenant": "imp"}) + "\n"
                          for i in range(1, 601)) +
                  json.dumps({"hostname": "bad..name.example.com", "tenant": "imp"}) + "\n")
    r = cli(edge, "domains", "import", str(jl))
    assert r.returncode == 1, r.stderr
    assert "added: 600, already there: 0, refused: 1" in r.stdout
    assert "line 601: bad..name.example.com: refused (empty_label): hostname has an empty label" in r.stdout
    assert "601/601" in r.stderr
    r = cli(edge, "domains", "import", str(jl), "--json")  # re-run: idempotent
    doc = json.loads(r.stdout)
    assert (doc["added"], doc["exists"], doc["refused"]) == (0, 600, 1) and r.returncode == 1
    st, body = get(edge, {"tenant": "imp", "limit": 1})
    assert body["total"] == 600
    csv_text = "hostname,tenant,validation\n" + "".join(f"c{i}.import.example.com,imp-csv,auto\n"
                                                          for i in range(1, 21))
    r = cli(edge, "domains", "import", "-", stdin=csv_text)
    assert r.returncode == 0 and "added: 20, already there: 0, refused: 0" in r.stdout, r.stderr
    r = cli(edge, "domains", "import", "-", stdin=csv_text)
    assert r.returncode == 0 and "added: 0, already there: 20, refused: 0" in r.stdout, r.stderr


@pytest.mark.parametrize("text,line", [("hostname,tenant\na.example.com,t\nb.example.com,t,extra\n", 3),
                                       ('{"hostname": "a.example.com"}\n{"hostname": \n', 2),
                                       ('{"hostname": "a.example.com"}\n[1, 2]\n', 2),
                                       ("host,tenant\na.example.com,t\n", 1)])
def test_cli_import_bad_file_exits_2_naming_the_line(edge, text, line):
    r = cli(edge, "domains", "import", "-", stdin=text)
    assert r.returncode == 2 and f"line {line}:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert call(edge, "GET", "/v1/domains/a.example.com")[0] == 404  # nothing imported


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_round_trips(edge, fmt):
    r = cli(edge, "domains", "export", "--format", fmt)
    assert r.returncode == 0, r.stderr
    st, body = get(edge, {"limit": 1})
    if fmt == "jsonl":
        recs = [json.loads(ln) for ln in r.stdout.splitlines()]
    else:
        import csv
        recs = list(csv.DictReader(r.stdout.splitlines()))
    assert len(recs) == body["total"] and len({x["hostname"] for x in recs}) == len(recs)
    assert [x["hostname"] for x in recs if x["hostname"].startswith("d")] == NAMES
    back = cli(edge, "domains", "import", "-", "--json", stdin=r.stdout)
    doc = json.loads(back.stdout)
    assert back.returncode == 0 and (doc["added"], doc["exists"], doc["refused"]) == (0, len(recs), 0)


def test_migration_0005_fills_the_sort_key_of_existing_domains(database_url):
    """A database at 0004 with domains upgrades to head; the existing rows list in natural order, paged by key."""
    import asyncio

    from alembic import command
    from sqlalchemy import text

    from store import make_engine, migrate, open_storage
    from store.database import alembic_config
    engine = make_engine(database_url)
    try:
        cfg = alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0004")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (name, created_at) VALUES ('t', CURRENT_TIMESTAMP)"))
            for h in ("d100.example.com", "d10.example.com", "d9.example.com", "d99.example.com", "a.example.com"):
                conn.execute(text("INSERT INTO domains (hostname, tenant_id, status, attempts, dns_attempts, "
                                  "renew_requested, ownership_required, created_at, updated_at) VALUES (:h, "
                                  "(SELECT id FROM tenants WHERE name = 't'), 'active', 0, 0, false, false, "
                                  "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"h": h})
        migrate(engine)
    finally:
        engine.dispose()
    st = open_storage(database_url)
    try:
        async def check():
            rows = await st.list_domains()
            assert [d.hostname for d in rows] == ["a.example.com", "d9.example.com", "d10.example.com",
                                                  "d99.example.com", "d100.example.com"]
            assert all(d.sort_key for d in rows)
            after = await st.list_domains(after=(rows[1].sort_key, rows[1].hostname), limit=2)
            assert [d.hostname for d in after] == ["d10.example.com", "d99.example.com"]
            assert await st.count_domains(prefix="d1") == 2 and await st.count_domains(search="9") == 2
        asyncio.run(check())
    finally:
        st.close()


def test_batch_with_a_tenant_token(edge):
    st, t = call(edge, "POST", "/v1/tenants", {"name": "fleet-c"})
    assert st in (200, 201), t
    items = [{"hostname": f"t{i}.tenant-batch.example.com"} for i in range(20)]
    items += [{"hostname": "t0.tenant-batch.example.com"}, {"hostname": "u.tenant-batch.example.com",
                                                            "tenant": "fleet-b"}, {"hostname": NAMES[1]}]
    st, body = call(edge, "POST", "/v1/domains/batch", {"domains": items}, token=t["token"])
    assert st == 200, body
    res = [(r["result"], (r.get("error") or {}).get("code")) for r in body["results"]]
    assert res == [("added", None)] * 20 + [("exists", None), ("refused", "forbidden"), ("refused", "already_exists")]
    st, d = call(edge, "GET", "/v1/domains/t3.tenant-batch.example.com", token=t["token"])
    assert st == 200 and d["tenant"] == "fleet-c" and d["status"] == "pending_ownership"  # same rules as one add
    assert "domain" not in str(body["results"][-1]["error"])  # another tenant's domain is not shown


def test_cli_import_carries_the_settings_and_export_shows_them(edge):
    jl = "\n".join(json.dumps(x) for x in [
        {"hostname": "s1.settings.example.com", "tenant": "sets", "origin": "https://o1.example:8443/app/",
         "metadata": {"plan": "gold"}, "min_tls_version": "1.3", "http2": False, "validation": "auto"},
        {"hostname": "s2.settings.example.com", "tenant": "sets", "origin": "gopher://o.example"}]) + "\n"
    r = cli(edge, "domains", "import", "-", "--json", stdin=jl)
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and (doc["added"], doc["refused"]) == (1, 1), r.stdout
    assert doc["refused_items"][0]["code"] == "invalid_origin" and doc["refused_items"][0]["line"] == 2
    csv_text = ('hostname,tenant,origin,metadata,min_tls_version,http2\n'
                's3.settings.example.com,sets,http://10.0.0.8:8080,"{""plan"": ""free"", ""team"": ""a,b""}",'
                '1.2,true\n')
    r = cli(edge, "domains", "import", "-", stdin=csv_text)
    assert r.returncode == 0 and "added: 1" in r.stdout, r.stdout + r.stderr
    st, d = call(edge, "GET", "/v1/domains/s1.settings.example.com")
    assert (d["origin"], d["metadata"], d["min_tls_version"], d["http2"]) == (
        "https://o1.example:8443/app", {"plan": "gold"}, "1.3", False)
    st, d = call(edge, "GET", "/v1/domains/s3.settings.example.com")
    assert (d["origin"], d["metadata"], d["min_tls_version"], d["http2"]) == (
        "http://10.0.0.8:8080", {"plan": "free", "team": "a,b"}, "1.2", True)
    r = cli(edge, "domains", "export", "--format", "csv", "--tenant", "sets")
    import csv
    rows = {x["hostname"]: x for x in csv.DictReader(r.stdout.splitlines())}
    assert json.loads(rows["s3.settings.example.com"]["metadata"]) == {"plan": "free", "team": "a,b"}
    assert rows["s1.settings.example.com"]["http2"] == "false" and rows["s3.settings.example.com"]["http2"] == "true"
    r = cli(edge, "domains", "show", "s3.settings.example.com")
    assert "settings: origin=http://10.0.0.8:8080, min_tls_version=1.2, http2=True, metadata.plan=free" in r.stdout
