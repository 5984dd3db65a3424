"""``edgecert demo``: the whole job on one machine with no public DNS.

Starts a local Pebble CA and pebble-challtestsrv (as the DNS), runs edgecert in this process with embedded
defaults (SQLite), onboards a demo tenant domain, shows it going from pending to served HTTPS, prints the
``openssl s_client`` command that proves it, and keeps serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import signal
import sys
from pathlib import Path

import aiohttp

__all__ = ["demo_parser", "demo_main"]


def _port_free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _pick(port: int) -> int:
    from edge.demo.process import free_port
    return port if _port_free(port) else free_port()


async def _run(args) -> int:
    from edge.app import Server
    from edge.config import Settings
    from edge.demo.components import ChallTestSrv, Pebble

    work = Path(args.dir).resolve()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    api_port, http_port, https_port = _pick(args.api_port), _pick(args.http_port), _pick(args.https_port)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    say(f"edgecert demo: working in {work}")
    say("  starting pebble-challtestsrv (DNS) and Pebble (ACME CA) on 127.0.0.1 ...")
    dns = ChallTestSrv(work_dir=work / "dns").start()
    pebble = Pebble(dns_server=dns, work_dir=work / "pebble", http_port=http_port).start()
    roots = pebble.write_roots(work / "pebble-roots.pem")
    token = secrets.token_urlsafe(24)
    settings = Settings.load(env={}, database_url=f"sqlite:///{work}/edgecert.db", state_dir=str(work / "state"),
                             acme_directory=pebble.directory_url, acme_ca_bundle=pebble.ca_bundle,
                             api_listen=f"127.0.0.1:{api_port}", http_listen=f"127.0.0.1:{http_port}",
                             https_listen=f"127.0.0.1:{https_port}", dns_resolver=dns.dns_address,
                             edge_target="edge.demo.test", admin_token=token, sweep_interval=1.0,
                             dns_recheck_initial=1.0, https_public_port=https_port)
    server = Server(settings)
    try:
        await server.start()
        api = f"http://127.0.0.1:{api_port}"
        say(f"  edgecert is serving: API {api}  HTTP :{http_port}  HTTPS (TLS edge) :{https_port}")
        say(f"  operator token for this demo: {token}")
        say("  to use the CLI against it from another shell:")
        say(f"    export EDGECERT_API_URL={api} EDGECERT_ADMIN_TOKEN={token}")
        hostname = args.hostname
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{api}/v1/domains", json={"hostname": hostname, "tenant": "demo-tenant"}) as r:
                body = await r.json()
                if r.status not in (201, 409):
                    say(f"could not add {hostname}: {body}")
                    return 1
            seen, last, old_serial = 0, None, None
            if r.status == 409:
                # A re-run: the name and its certificate are kept, but this Pebble is a new CA (a new root at
                # every start, written to pebble-roots.pem above): the old certificate would not verify against
                # it. Re-issue from this Pebble, so that the commands printed below prove it again.
                async with http.get(f"{api}/v1/domains/{hostname}") as r:
                    old = await r.json()
                old_serial = (old.get("certificate") or {}).get("serial")
                async with http.get(f"{api}/v1/domains/{hostname}/events?limit=1000") as r:
                    seen = max([e["id"] for e in (await r.json())["events"]], default=0)
                if old_serial:
                    async with http.post(f"{api}/v1/domains/{hostname}/renew") as r:
                        if r.status != 202:
                            say(f"could not renew {hostname}: {await r.json()}")
                            return 1
                    say(f"\n{hostname} is kept from an earlier run; its certificate came from the previous Pebble "
                        f"(a new CA at every start): re-issuing it from this one.")
            say(f"\nonboarding {hostname} (tenant demo-tenant):")
            for _ in range(600):
                async with http.get(f"{api}/v1/domains/{hostname}/events?after={seen}") as r:
                    for e in (await r.json())["events"]:
                        seen = max(seen, e["id"])
                        say(f"  {e['at'][11:19]}  {e['kind']:<20} {e['message']}")
                async with http.get(f"{api}/v1/domains/{hostname}") as r:
                    d = await r.json()
                if d["status"] != last:
                    say(f"  status -> {d['status']}")
                    last = d["status"]
                cert = d.get("certificate") or {}
                fresh = cert.get("serial") != old_serial
                if d["status"] == "active" and fresh and cert.get("issuer_directory") not in (None,
                                                                                            pebble.directory_url):
                    # An order of the earlier run, interrupted and finished now: its certificate is from the
                    # previous Pebble (it would not verify against this one's root). Re-issue from this one.
                    old_serial = cert.get("serial")
                    async with http.post(f"{api}/v1/domains/{hostname}/renew") as r:
                        if r.status != 202:
                            say(f"could not renew {hostname}: {await r.json()}")
                            return 1
                    say(f"  the certificate finished now came from the previous Pebble: re-issuing it from this one")
                    continue
                if d["status"] == "failed" or (d["status"] == "active" and fresh):
                    break
                await asyncio.sleep(0.5)
        if d["status"] != "active":
            say(f"\n{hostname} did not become active: {d.get('last_error')}")
            return 1
        cert = d["certificate"]
        say(f"\n{hostname} is served over HTTPS: certificate {cert['serial']} from {cert['issuer']}, "
            f"valid until {cert['not_after']}.")
        say("\nProve it (the chain verifies to the demo CA's root, for this exact name):")
        say(f"  openssl s_client -connect 127.0.0.1:{https_port} -servername {hostname} -verify_hostname {hostname} "
            f"-verify_return_error -CAfile {roots} </dev/null 2>&1 | grep -E 'subject=|issuer=|Verify return code'")
        say(f"  curl --cacert {roots} --resolve {hostname}:{https_port}:127.0.0.1 https://{hostname}:{https_port}/")
        say(f"  status page: {api}/status/{hostname}")
        say(f"  diagnose:    edgecert diagnose {hostname} --connect 127.0.0.1:{https_port} --cafile {roots}")
        say("\nServing until Ctrl-C.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.exit_when_active:
            return 0
        await stop.wait()
        return 0
    finally:
        await server.stop()
        pebble.stop()
        dns.stop()
        say("stopped.")


def demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgecert demo", description=__doc__.splitlines()[0] + " Re-running it "
                                "without --fresh keeps the domain and re-issues its certificate from the new "
                                "Pebble, so the commands it prints always verify.")
    p.add_argument("--dir", default="./edgecert-demo", help="working directory (default ./edgecert-demo)")
    p.add_argument("--hostname", default="shop.customer.test", help="the demo tenant domain")
    p.add_argument("--api-port", type=int, default=8080, help="port of the API (default 8080)")
    p.add_argument("--http-port", type=int, default=5002, help="port of the plain-HTTP listener, where Pebble "
                   "checks HTTP-01 answers (default 5002)")
    p.add_argument("--https-port", type=int, default=8443, help="port of the TLS edge (default 8443)")
    p.add_argument("--fresh", action="store_true", help="start from an empty working directory")
    p.add_argument("--exit-when-active", action="store_true", help="stop once the domain is served (for CI)")
    return p


def demo_main(argv: list[str]) -> int:
    p = demo_parser()
    args = p.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for tool in ("pebble", "pebble-challtestsrv"):
        if shutil.which(tool) is None:
            print(f"edgecert demo needs {tool}: sudo apt-get install -y pebble", file=sys.stderr)
            return 2
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0
