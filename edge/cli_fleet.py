"""``edgecert domains list | import | export``: the fleet commands of the CLI, over the API.

``list`` pages through ``GET /v1/domains`` (``next`` cursors) and never truncates silently; ``import`` reads JSON
lines or CSV with a header, sends batches of ``BATCH`` to ``POST /v1/domains/batch`` and summarises what was added,
already there or refused (re-running it is harmless: names already there say so); ``export`` writes the whole fleet
as JSON lines or CSV that ``import`` reads back.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import urllib.parse
from typing import Any, Callable, Iterator, Protocol, TextIO

__all__ = ["BATCH", "FIELDS", "BadFile", "list_command", "import_command", "export_command", "read_items", "table"]

#: Items per ``POST /v1/domains/batch`` (the API's maximum).
BATCH = 500
#: The fields a domain line may carry (others, e.g. ``status`` from an export, are ignored).
FIELDS = ("hostname", "tenant", "validation", "origin", "metadata", "min_tls_version", "http2", "key_type")
#: Columns of ``export`` (``metadata`` as a JSON object in CSV).
EXPORT_COLUMNS = ("hostname", "tenant", "status", "expires", "validation", "origin", "min_tls_version", "http2",
                  "metadata")


class Api(Protocol):
    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]: ...


class BadFile(Exception):
    """The import file cannot be read; ``line`` is its 1-based line number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line, self.message = line, message


def table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    widths = [max(len(h), *(len(str(r.get(k) or "")) for r in rows)) if rows else len(h) for k, h in cols]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(cols, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(r.get(k) or "-").ljust(w) for (k, _), w in zip(cols, widths)).rstrip())
    return "\n".join(lines)


def _err(body: Any) -> dict:
    return (body or {}).get("error", {}) if isinstance(body, dict) else {}


def _pages(api: Api, params: dict, limit: int, every: bool) -> Iterator[dict]:
    """The pages of ``GET /v1/domains`` (only the first unless ``every``); raises ``SystemExit`` on an error."""
    cursor = None
    while True:
        q = {**{k: v for k, v in params.items() if v}, "limit": limit, **({"cursor": cursor} if cursor else {})}
        st, body = api.call("GET", "/v1/domains?" + urllib.parse.urlencode(q))
        if st != 200:
            e = _err(body)
            raise SystemExit(f"error ({st} {e.get('code', '')}): {e.get('message', body)}")
        yield body
        cursor = body.get("next")
        if not every or not cursor:
            return


def _row(d: dict) -> dict:
    return {**d, "expires": (d.get("certificate") or {}).get("not_after"),
            "problem": (d.get("last_error") or "")[:60]}


def list_command(api: Api, *, status: str | None, tenant: str | None, search: str | None, prefix: str | None,
                 every: bool, limit: int | None, as_json: bool, out: TextIO = sys.stdout,
                 err: TextIO = sys.stderr, issuer: str | None = None, expiring_before: str | None = None,
                 probe: str | None = None, metadata: str | None = None) -> int:
    params = {"status": status, "tenant": tenant, "q": search, "prefix": prefix, "issuer": issuer,
              "expiring_before": expiring_before, "probe": probe, "metadata": metadata}
    page_size = limit or (1000 if every else 100)
    domains: list[dict] = []
    total, more = 0, None
    for page in _pages(api, params, page_size, every):
        domains += page["domains"]
        total, more = page.get("total", len(domains)), page.get("next")
    if as_json:
        json.dump({"domains": domains, "count": len(domains), "total": total, "next": more}, out, indent=2)
        out.write("\n")
    else:
        out.write(table([_row(d) for d in domains], [("hostname", "HOSTNAME"), ("tenant", "TENANT"),
                                                      ("status", "STATUS"), ("expires", "EXPIRES"),
                                                      ("problem", "PROBLEM")]) + "\n")
    if more:
        rest = total - len(domains)
        print(f"showing {len(domains)} of {total} domains; {rest} more not shown: add --all to see every one "
              f"(or --limit N, up to 1000 per page)", file=err)
    elif not as_json:
        print(f"{total} domain{'s' if total != 1 else ''}", file=err)
    return 0


def read_items(text: str) -> list[tuple[int, dict]]:
    """(line number, item) for every record of a JSON-lines or CSV (header line first) file; ``BadFile``."""
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    items: list[tuple[int, dict]] = []
    if not first:
        raise BadFile(1, "the file is empty")
    if "\x00" in text:
        raise BadFile(text[:text.index("\x00")].count("\n") + 1, "a NUL byte: this is not a text file")
    if first.startswith("{"):
        for n, ln in enumerate(lines, start=1):
            if not ln.strip():
                continue
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as e:
                raise BadFile(n, f"not valid JSON ({e.msg}); each line must be one JSON object") from None
            except (ValueError, RecursionError):  # an integer of more than 4,300 digits; nesting too deep
                raise BadFile(n, "not valid JSON (a number of more than 4,300 digits, or nested too deeply)") \
                    from None
            if not isinstance(obj, dict):
                raise BadFile(n, "each line must be a JSON object like {\"hostname\": ..., \"tenant\": ...}")
            items.append((n, {k: obj[k] for k in FIELDS if obj.get(k) not in (None, "")}))
        return items
    reader = csv.reader(io.StringIO(text), strict=True)  # an unterminated quote is an error, not the rest of the file
    try:
        header = [h.strip().lower() for h in next(reader)]
        if "hostname" not in header:
            raise BadFile(1, f"the CSV header must name a 'hostname' column (found: {', '.join(header)[:200]}); "
                          f"JSON lines start with '{{'")
        twice = sorted({h for h in header if h and header.count(h) > 1})
        if twice:
            raise BadFile(1, f"the CSV header names {twice[0][:40]!r} twice")
        for row in reader:
            n = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise BadFile(n, f"{len(row)} columns where the header has {len(header)}")
            rec = {h: c.strip() for h, c in zip(header, row) if h in FIELDS and c.strip()}
            if isinstance(rec.get("metadata"), str) and rec["metadata"].startswith("{"):
                try:
                    rec["metadata"] = json.loads(rec["metadata"])
                except (ValueError, RecursionError):  # not JSON, a 4,300+ digit number, nested too deeply
                    pass  # sent as is: the API says what is wrong with it
            if rec.get("http2", "").lower() in ("true", "false"):
                rec["http2"] = rec["http2"].lower() == "true"
            items.append((n, rec))
    except csv.Error as e:
        raise BadFile(reader.line_num, f"not valid CSV ({e})") from None
    return items


def import_command(api: Api, source: str, *, as_json: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                   read_stdin: Callable[[], str] = lambda: sys.stdin.buffer.read().decode("utf-8-sig")) -> int:
    try:
        if source == "-":
            text = read_stdin()
        else:
            with open(source, encoding="utf-8-sig") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"edgecert: cannot read {source}: {e}", file=err)
        return 2
    try:
        items = read_items(text)
    except BadFile as e:
        print(f"edgecert: {source if source != '-' else 'stdin'}, {e}; nothing was imported", file=err)
        return 2
    counts = {"added": 0, "exists": 0, "refused": 0}
    refused: list[dict] = []
    for i in range(0, len(items), BATCH):
        chunk = items[i:i + BATCH]
        st, body = api.call("POST", "/v1/domains/batch", {"domains": [rec for _, rec in chunk]})
        if st != 200 or not isinstance(body, dict) or len(body.get("results") or []) != len(chunk):
            e = _err(body)
            print(f"\nerror ({st} {e.get('code', '')}): {e.get('message', body)}\nstopped after {i} of "
                  f"{len(items)} lines; run the same command again to resume (names already imported are "
                  f"reported as already there)", file=err)
            return 1
        for (n, rec), r in zip(chunk, body["results"]):
            counts[r["result"]] = counts.get(r["result"], 0) + 1
            if r["result"] == "refused":
                refused.append({"line": n, "hostname": rec.get("hostname"), **(r.get("error") or {})})
        done = i + len(chunk)
        print(f"\rimport: {done}/{len(items)} ({100 * done // len(items)}%)  added {counts['added']}, already "
              f"there {counts['exists']}, refused {counts['refused']}", end="" if done < len(items) else "\n",
              file=err, flush=True)
    if as_json:
        json.dump({**counts, "refused_items": refused}, out, indent=2)
        out.write("\n")
    else:
        print(f"added: {counts['added']}, already there: {counts['exists']}, refused: {counts['refused']}",
              file=out)
        for r in refused:
            print(f"  line {r['line']}: {r.get('hostname')}: refused ({r.get('code')}): {r.get('message')}",
                  file=out)
    return 1 if refused else 0


def export_command(api: Api, *, fmt: str, status: str | None, tenant: str | None, out: TextIO = sys.stdout) -> int:
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(EXPORT_COLUMNS)
    for page in _pages(api, {"status": status, "tenant": tenant}, 1000, True):
        for d in page["domains"]:
            rec = {"hostname": d["hostname"], "tenant": d.get("tenant"), "status": d.get("status"),
                   "expires": (d.get("certificate") or {}).get("not_after"), "validation": d.get("validation"),
                   "origin": d.get("origin"), "min_tls_version": d.get("min_tls_version"), "http2": d.get("http2"),
                   "metadata": d.get("metadata") or None}
            if writer is not None:
                writer.writerow(["" if rec[c] is None else json.dumps(rec[c], sort_keys=True) if c == "metadata"
                                 else str(rec[c]).lower() if c == "http2" else rec[c] for c in EXPORT_COLUMNS])
            else:
                out.write(json.dumps({k: v for k, v in rec.items() if v is not None}) + "\n")
    return 0
