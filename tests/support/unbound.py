"""Unbound, a real recursive resolver, in front of the test DNS servers: the CA's (Pebble's) and edgecert's view of
DNS in the DNS-01 tests.

Why a resolver: the tenant's zone (pebble-challtestsrv, where the tests create ``_acme-challenge.<name> CNAME
<label>.<challenge zone>``) and the operator's challenge zone (Knot, which takes edgecert's RFC 2136 updates) are
two servers, as in production. pebble-challtestsrv follows a CNAME only into its own data and Knot only inside its
own zone, and Pebble's validator (like any stub) does not chase CNAMEs itself: it asks one server and reads the TXT
records of the answer. A recursive resolver does the chasing, as the CA's resolver does for real: Unbound forwards
the challenge zone to Knot (``stub-zone``) and every other name to pebble-challtestsrv (``forward-zone``), with its
cache off (``cache-max-ttl: 0``) so that every question sees the servers' current data. So the TXT value really
travels edgecert -> RFC 2136 -> Knot -> Unbound (following the tenant's CNAME) -> Pebble's DNS-01 lookup.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.demo.process import DevEnvError, ManagedProcess, address_in_use, find_binary, free_port, wait_for

__all__ = ["UnboundResolver"]


class UnboundResolver(ManagedProcess):
    """``unbound -d`` on 127.0.0.1:PORT: ``stub_zones`` {zone: "host:port"} asked without recursion (authoritative
    servers), everything else forwarded to ``forward_to`` ("host:port")."""

    _name = "unbound"

    def __init__(self, *, work_dir: str | os.PathLike, forward_to: str, stub_zones: dict[str, str],
                 start_timeout: float = 15.0) -> None:
        super().__init__(Path(work_dir), "unbound.log")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.forward_to = forward_to
        self.stub_zones = dict(stub_zones)
        self.port = 0
        self.start_timeout = start_timeout

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def _at(hostport: str) -> str:
        host, _, port = hostport.rpartition(":")
        return f"{host}@{port}"

    def _write(self) -> Path:
        d = self.work_dir
        stubs = "".join(f'stub-zone:\n    name: "{z.rstrip(".")}."\n    stub-addr: {self._at(a)}\n'
                        for z, a in self.stub_zones.items())
        conf = d / "unbound.conf"
        conf.write_text(f"""\
server:
    interface: 127.0.0.1
    port: {self.port}
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    cache-max-ttl: 0
    cache-max-negative-ttl: 0
    local-zone: "test." nodefault
    local-zone: "invalid." nodefault
    local-zone: "example." nodefault
remote-control:
    control-enable: no
{stubs}forward-zone:
    name: "."
    forward-addr: {self._at(self.forward_to)}
""")
        return conf

    def start(self) -> "UnboundResolver":
        if self.running:
            return self
        binary = find_binary("unbound", "/usr/sbin/unbound" if os.access("/usr/sbin/unbound", os.X_OK) else None)
        for attempt in range(4):
            self.port = free_port(udp=True)
            conf = self._write()
            proc = self._spawn([binary, "-d", "-c", str(conf)])
            try:
                wait_for(f"unbound on {self.address}", self._ready, timeout=self.start_timeout, proc=proc,
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
        q = dns.message.make_query("readiness-probe.example.", "A")
        dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.5)
        return True
