"""Knot DNS (``knotd``) for the DNS-01 tests: a real authoritative server for the challenge zone, taking RFC 2136
dynamic updates signed with a TSIG key, started in a temporary directory on a free port and stopped afterwards.

    with KnotServer(work_dir=tmp, zone="acme.edgecert.test") as knot:
        knot.address          # "127.0.0.1:PORT"  -> EDGECERT_DNS01_SERVER
        knot.tsig             # "edgecert:hmac-sha256:<base64>"  -> EDGECERT_DNS01_TSIG
        knot.txt("label.acme.edgecert.test")   # what the server answers now (asked directly, over TCP)

Nothing runs as a daemon: ``knotd`` stays in the foreground as our child (its own pid only is signalled). The zone
file is never written back (``zonefile-sync: -1``); updates live in the journal under the work directory.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from edge.demo.process import DevEnvError, ManagedProcess, address_in_use, find_binary, free_port, wait_for

__all__ = ["KnotServer"]


class KnotServer(ManagedProcess):
    """``knotd`` serving ``zone`` on 127.0.0.1 (UDP and TCP), updates allowed with the TSIG key :attr:`tsig`.

    Args:
        work_dir: where the config, zone file, journal and log go.
        zone: the zone apex (no trailing dot).
        key_name / algorithm: the TSIG key (a fresh random secret for each server). Unsigned updates are refused.
    """

    _name = "knotd"

    def __init__(self, *, work_dir: str | os.PathLike, zone: str = "acme.edgecert.test",
                 key_name: str = "edgecert", algorithm: str = "hmac-sha256", start_timeout: float = 15.0) -> None:
        super().__init__(Path(work_dir), "knotd.log")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.zone = zone.rstrip(".").lower()
        self.key_name = key_name
        self.algorithm = algorithm
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.port = 0
        self.start_timeout = start_timeout

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tsig(self) -> str:
        """``name:algorithm:base64secret``, the form of ``EDGECERT_DNS01_TSIG``."""
        return f"{self.key_name}:{self.algorithm}:{self.secret}"

    def _write(self) -> Path:
        d = self.work_dir
        (d / "db").mkdir(exist_ok=True)
        (d / f"{self.zone}.zone").write_text(
            f"$ORIGIN {self.zone}.\n$TTL 60\n"
            f"@ SOA ns.{self.zone}. hostmaster.{self.zone}. 1 3600 600 86400 5\n"
            f"@ NS ns.{self.zone}.\nns A 127.0.0.1\n")
        conf = d / "knot.conf"
        conf.write_text(f"""\
server:
    listen: 127.0.0.1@{self.port}
    rundir: "{d}"
    pidfile: "{d}/knot.pid"
key:
  - id: {self.key_name}
    algorithm: {self.algorithm}
    secret: {self.secret}
acl:
  - id: edgecert_update
    key: {self.key_name}
    action: update
database:
    storage: "{d}/db"
template:
  - id: default
    storage: "{d}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
zone:
  - domain: {self.zone}
    file: "{self.zone}.zone"
    acl: edgecert_update
log:
  - target: stdout
    any: info
""")
        return conf

    def start(self) -> "KnotServer":
        if self.running:
            return self
        binary = find_binary("knotd", "/usr/sbin/knotd" if os.access("/usr/sbin/knotd", os.X_OK) else None)
        for attempt in range(4):
            self.port = free_port(udp=True)
            conf = self._write()
            proc = self._spawn([binary, "-c", str(conf)])
            try:
                wait_for(f"knotd on {self.address}", self._ready, timeout=self.start_timeout, proc=proc,
                         log=self.log_path)
                return self
            except DevEnvError:
                retry = attempt < 3 and address_in_use(self._current_run_log())
                self.stop()
                if not retry:
                    raise
        raise AssertionError("unreachable")

    def _ready(self) -> bool:
        import dns.message
        import dns.query
        import dns.rcode
        q = dns.message.make_query(self.zone + ".", "SOA")
        r = dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=1.0)
        return r.rcode() == dns.rcode.NOERROR and bool(r.answer)

    def txt(self, name: str) -> list[str]:
        """The TXT strings the server answers for ``name`` now (asked directly, no recursion, TCP)."""
        import dns.message
        import dns.query
        import dns.rdatatype
        q = dns.message.make_query(name.rstrip(".") + ".", "TXT")
        r = dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=2.0)
        out = []
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                out += [b"".join(rr.strings).decode() for rr in rrset]
        return out
