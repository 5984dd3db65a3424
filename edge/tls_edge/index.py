"""One concern: what the handshake reads for a name, from memory only. The TLS edge's certificate selection: an
in-memory SNI index, lazily built TLS objects, the LRU that bounds them, the background prewarm, and the bulk load of
store rows into the index.

The handshake path (``sni_callback`` / the engine's ``select``) only reads memory, in a fixed order: exact name, then
the wildcard one label up, then the default certificate. A name not in memory never triggers any I/O or CA order: it
gets the default certificate. What is built per entry is a CertKey (the C engine, :mod:`edge.tls_edge.engine`) or,
without the engine, an ``SSLContext`` (``load_cert_chain`` from memory, :mod:`edge.tls_edge.certificates`); built
objects are kept in an LRU bounded by ``max_contexts`` and by a memory budget (``unit_bytes`` each).

Building one SSLContext costs ~1.1-1.6 ms of CPU with OpenSSL 3.0 (measured with perf: mostly the OSSL_DECODER chains
that decode the private key and the two certificates' public keys) and ~25 KiB; a CertKey ~0.2 ms and ~9 KiB. To keep
that off the handshake path, :meth:`SniIndex.start_prewarm` builds them in a background thread until the LRU is full,
after start and after every index update; the handshake path builds only on a miss (in memory, no I/O). Prewarmed
objects enter the LRU at its cold end, so those that served a handshake are evicted last.

Two per-name rules are read in the ClientHello path too, from memory (kept apart from the certificate entries):
``challenges`` (TLS-ALPN-01 answers, RFC 8737: the challenge certificate, built off the handshake path by
:meth:`SniIndex.put_challenge`) and ``min_tls`` (a domain's ``min_tls_version``; only ``"1.3"`` narrows anything,
TLS 1.2 being the edge's floor). The C engine reads both dicts in its ClientHello callback; the ``ssl`` fallback in
:meth:`SniIndex._sni_callback`, from the ClientHello the HTTP layer parsed (:mod:`edge.tls_edge.clienthello`).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import ssl
import threading
import time
from collections import OrderedDict, deque
from typing import Callable, Iterable, NamedTuple

from edge.tls_edge import certificates
from edge.tls_edge import engine as tlsengine
from edge.tls_edge.certificates import (TLS_VERSIONS, make_challenge_context, make_server_context, pem_cert_to_der,
                                        split_fullchain)

__all__ = ["CertEntry", "SniIndex", "SniOutcome", "CONTEXT_BYTES", "entry_from_row", "load_index_rows",
           "build_entry_context", "HostSettings", "load_host_settings", "load_min_tls_rows"]

_NO_APPLICATION_PROTOCOL = 120  # TLS alert (RFC 7301); Python's ssl names no constant for it
_BUILD_PAUSE = 0.0002  # s the prewarm thread sleeps after each build, GIL released (see SniIndex._prewarm_loop)


# Memory of one built SSLContext with a P-256 leaf, one intermediate and its key (OpenSSL 3.0.x, measured as the RSS
# growth over 3,000 contexts): a bare SSL_CTX is ~12.7 KiB, the leaf + key ~6 KiB, the intermediate ~6 KiB.
CONTEXT_BYTES = 25 * 1024

log = logging.getLogger(__name__)


class SniOutcome:
    KNOWN = "known"
    DEFAULT = "default"      # no SNI sent
    UNKNOWN = "unknown"      # SNI sent, no certificate for it
    INVALID = "invalid"      # SNI is not a plausible hostname


class CertEntry:
    """One served certificate, compact: the leaf as DER, the chain interned (shared by all certificates of one
    intermediate), the key either as PEM or still encrypted (decrypted only when a context is first built).

    The key can be given as PEM (``key_pem``), as a callable returning it (``key_unlock``), or -- the compact form
    used for the bulk load of 100k names -- as the encrypted blob plus the shared key box (``key_enc`` + ``keybox``;
    purpose ``cert-key:<hostname>``): no per-entry closure."""

    __slots__ = ("hostname", "_leaf_der", "_leaf_pem", "chain_pem", "_key", "_unlock", "serial", "sha256", "not_after",
                 "cert_id", "names", "_ctx")

    def __init__(self, *, hostname: str, fullchain_pem: bytes | None = None, key_pem: bytes | None = None,
                 serial: str, sha256: str | None = None, not_after: dt.datetime | None = None,
                 cert_id: int | None = None, names: tuple[str, ...] = (), leaf_der: bytes | None = None,
                 chain_pem: bytes | None = None, key_unlock: Callable[[], bytes] | None = None,
                 key_enc: bytes | None = None, keybox=None) -> None:
        self.hostname = hostname
        if leaf_der is None:
            assert fullchain_pem is not None
            leaf_der, chain_pem = split_fullchain(fullchain_pem)
        self._leaf_der = leaf_der
        self._leaf_pem = None
        self.chain_pem = _intern(chain_pem or b"")
        if key_enc is not None:
            self._key, self._unlock = key_enc, keybox
        else:
            self._key = key_pem
            self._unlock = key_unlock
        self.serial = serial
        self.sha256 = sha256
        self.not_after = not_after
        self.cert_id = cert_id
        self.names = names
        self._ctx: ssl.SSLContext | None = None

    @property
    def fullchain_pem(self) -> bytes:
        if self._leaf_pem is not None:
            pem = self._leaf_pem.encode()
            return pem + self.chain_pem if pem.endswith(b"\n") else pem + b"\n" + self.chain_pem
        return ssl.DER_cert_to_PEM_cert(self._leaf_der).encode() + self.chain_pem

    @property
    def leaf_der(self) -> bytes:
        if self._leaf_der is None:
            return pem_cert_to_der(self._leaf_pem)  # type: ignore[arg-type]
        return self._leaf_der

    @property
    def key_pem(self) -> bytes:
        u = self._unlock
        if u is None:
            assert self._key is not None
            return self._key
        if self._key is not None:  # encrypted blob + key box
            return u.decrypt(self._key, purpose=b"cert-key:" + self.hostname.encode())
        return u()


_CHAINS: dict[bytes, bytes] = {}


def _intern(chain: bytes) -> bytes:
    return _CHAINS.setdefault(chain, chain)


_CHAINS_STR: dict[str, bytes] = {}


def entry_from_row(hostname: str, cert_id: int, cert_pem: str, chain_pem: str, key_enc: bytes, keybox) -> CertEntry:
    """A compact :class:`CertEntry` from a store row (``store.readonly.SERVED_ROW``); the key stays encrypted until
    a context is built.

    This is the bulk-load path (100k rows in about a second): no keyword parsing, slots set directly, and the leaf
    kept as the PEM text the store returned (base64-decoding it to DER cost ~4-6 us a row here, 0.5 s at 100k, for
    ~210 bytes saved a row; the context build wants PEM anyway)."""
    chain = _CHAINS_STR.get(chain_pem)
    if chain is None:
        chain = _CHAINS_STR[chain_pem] = _intern(chain_pem.encode())
    e = _new_entry(CertEntry)
    e.hostname = hostname
    if not cert_pem.startswith("-----BEGIN CERTIFICATE-----"):
        raise ValueError("not a PEM certificate")
    e._leaf_der = None
    e._leaf_pem = cert_pem
    e.chain_pem = chain
    e._key = key_enc if type(key_enc) is bytes else bytes(key_enc)
    e._unlock = keybox
    e.serial = e.sha256 = e.not_after = e._ctx = None
    e.cert_id = cert_id
    e.names = ()
    return e


_new_entry = object.__new__


def build_entry_context(entry: CertEntry) -> ssl.SSLContext:
    """The SSLContext of ``entry`` (no engine): ``load_cert_chain`` from memory; its key is decrypted only for this."""
    return make_server_context(entry.fullchain_pem, entry.key_pem)



# -- per-hostname settings (issue 17): what the edge reads per name besides the certificate ---------------------
class HostSettings(NamedTuple):
    """A domain's own settings, as the edge serves them: ``origin`` (upstream URL: the domain's, else its tenant's;
    None: the global ``EDGECERT_UPSTREAM``), ``min_tls_version`` (``"1.2"`` | ``"1.3"`` | None: the global one),
    ``http2`` (None: the global default). Kept in :attr:`SniIndex.routes`, apart from the certificate entries, so
    that a certificate swap keeps them and a settings change needs no certificate."""
    origin: str | None = None
    min_tls_version: str | None = None
    http2: bool | None = None
    origin_public_only: bool = False  # the origin was set by a tenant: connect to public addresses only


def load_host_settings(index: "SniIndex", rows: Iterable[tuple], *, hostnames: Iterable[str] | None = None) -> int:
    """Put store rows (hostname, origin, min_tls_version, http2, origin_public_only) into ``index.routes``; names
    without a row (all of them, or those of ``hostnames``) lose their settings. Returns how many names have
    settings now."""
    fresh = {h: HostSettings(o or None, v or None, None if h2 is None else bool(h2), bool(p))
             for h, o, v, h2, p in rows}
    routes = index.routes
    if hostnames is None:
        index.routes = fresh  # one assignment: readers see the old table or the new one
    else:
        for h in hostnames:
            s = fresh.get(h)
            if s is None:
                routes.pop(h, None)
            else:
                routes[h] = s
    floors = getattr(index, "set_min_tls", None)  # the handshake's floor (edge/tls_edge/handshake_rules.py)
    if floors is not None:
        changed = fresh if hostnames is None else {h: fresh.get(h) for h in hostnames}
        if hostnames is None:
            for h in [h for h in index.min_tls if h not in fresh]:
                floors(h, None)
        for h, st in changed.items():
            floors(h, st.min_tls_version if st is not None else None)
    return len(index.routes)
# -- end of per-hostname settings --------------------------------------------------------------------------------


class SniIndex:
    """Hostname -> :class:`CertEntry`, plus an LRU of built SSLContexts.

    Reads (the handshake) take no lock: replacing an entry is one dict assignment, atomic under the GIL, so a
    handshake sees either the old or the new entry, never a mix. Writers (and the prewarm thread's LRU inserts)
    serialise on a lock.

    The LRU holds at most ``min(max_contexts, memory_budget // CONTEXT_BYTES)`` contexts.
    """

    def __init__(self, *, default_fullchain: bytes, default_key: bytes, max_contexts: int = 20000,
                 memory_budget: int | None = None, on_outcome: Callable[[str], None] | None = None,
                 engine: bool = False) -> None:
        self._exact: dict[str, CertEntry] = {}
        self.routes: dict[str, HostSettings] = {}  # per-hostname settings (load_host_settings; issue 17)
        self._lru: OrderedDict[int, CertEntry] = OrderedDict()
        # Read in the ClientHello path (see the module docstring): name -> built challenge certificate (CertKey or
        # SSLContext), and name (or "*.parent") -> lowest TLS version accepted (0x0304; 1.2 is everyone's floor).
        self.challenges: dict[str, object] = {}
        self.min_tls: dict[str, int] = {}
        # With ``engine`` (edge/tls_edge/engine.py: one SSL_CTX, certificates handed over per handshake), what the LRU
        # holds per entry is a CertKey (~9 KiB, ~0.55 M instructions to build: bench/RESULTS.md session 5) instead
        # of an SSLContext (~25 KiB, ~1.2 ms).
        self.engine = None
        self._builder: Callable[[CertEntry], object] = build_entry_context
        self.unit_bytes = CONTEXT_BYTES
        if engine and tlsengine.available():
            self.engine = tlsengine.make_engine(self.select, default_fullchain, default_key,
                                                tickets=certificates.TICKETS, challenges=self.challenges,
                                                min_versions=self.min_tls)
            self._builder = self._build_certkey
            self.unit_bytes = tlsengine.CERTKEY_BYTES
            log.info("TLS edge: C engine (edge.tls_edge._edgetls, %s); one SSL_CTX, certificates by SNI",
                     tlsengine.OPENSSL_VERSION)
        cap = max_contexts
        if memory_budget is not None and memory_budget > 0:
            cap = min(cap, memory_budget // self.unit_bytes)
        self._max = max(1, cap)
        self._wlock = threading.Lock()
        self._on_outcome = on_outcome
        self.default_pem = default_fullchain
        self.default_context = make_server_context(default_fullchain, default_key)
        self.default_context.sni_callback = self._sni_callback
        self.builds = 0            # contexts built, all paths
        self.builds_on_handshake = 0  # ... of which on the handshake path (a miss)
        self.prewarmed = 0         # ... of which by the prewarm thread
        self.build_seconds = 0.0
        self._warm_q: deque[str] | None = None
        self._warm_ev: threading.Event | None = None
        self._warm_thread: threading.Thread | None = None
        self._warm_stop = False
        self.warm_done = threading.Event()  # set when the prewarm thread first runs out of work (or of room)
        self.handshakes = 0  # every SNI callback; the prewarm thread backs off while it moves

    @property
    def max_contexts(self) -> int:
        return self._max

    def _build_certkey(self, entry: CertEntry):
        """The engine's builder. While every name stays decoded (the LRU holds them all), a CertKey is built once:
        the plain OpenSSL decode; when names are evicted and decoded again on handshakes, the cheaper decode of the
        leaf's public key (~0.53 M instead of ~1.46 M instructions, for ~7 k more per handshake afterwards: see
        ``_edgetls.c``, ``d2i_leaf``)."""
        return tlsengine.build_entry_certkey(entry, legacy_spki=self.evicting())

    def evicting(self) -> bool:
        """More names than the LRU holds: some are decoded again on their handshakes."""
        return len(self._exact) > self._max

    # -- writers ---------------------------------------------------------------------------------------------
    def put(self, entry: CertEntry, *, prebuild: bool = True) -> None:
        """Install or replace the entry for ``entry.hostname`` (and build its context first, off the handshake)."""
        if prebuild:
            self.context_for(entry)
        with self._wlock:
            old = self._exact.get(entry.hostname)
            self._exact[entry.hostname] = entry
            if old is not None and old is not entry:
                self._lru.pop(id(old), None)
                old._ctx = None
        if self._warm_q is not None and entry._ctx is None:
            self._warm_q.append(entry.hostname)
            self._warm_ev.set()  # type: ignore[union-attr]

    def put_many(self, entries) -> int:
        """Bulk :meth:`put` (no prebuild): one lock for the lot. Returns how many were installed."""
        n = 0
        exact, lru = self._exact, self._lru
        with self._wlock:
            for entry in entries:
                old = exact.get(entry.hostname)
                exact[entry.hostname] = entry
                if old is not None and old is not entry:
                    lru.pop(id(old), None)
                    old._ctx = None
                n += 1
        if self._warm_q is not None and n:
            self._warm_q.extend(e.hostname for e in entries if e._ctx is None)
            self._warm_ev.set()  # type: ignore[union-attr]
        return n

    def set_memory_budget(self, budget: int, *, max_contexts: int | None = None) -> int:
        """Re-bound the LRU by ``budget`` bytes (and ``max_contexts``); evicts the coldest if over. Returns the bound."""
        cap = budget // self.unit_bytes
        if max_contexts is not None:
            cap = min(cap, max_contexts)
        with self._wlock:
            self._max = max(1, cap)
            while len(self._lru) > self._max:
                _, evicted = self._lru.popitem(last=False)
                evicted._ctx = None
        if self._warm_ev is not None:
            self._warm_ev.set()
        return self._max

    def remove(self, hostname: str) -> None:
        with self._wlock:
            old = self._exact.pop(hostname, None)
            if old is not None:
                self._lru.pop(id(old), None)
                old._ctx = None
        if self._warm_ev is not None:
            self._warm_ev.set()  # a free slot: the prewarm thread may go on

    def names(self) -> list[str]:
        return list(self._exact)

    def __len__(self) -> int:
        return len(self._exact)

    def __contains__(self, hostname: str) -> bool:
        return hostname in self._exact

    # -- TLS-ALPN-01 answers and per-name TLS floors ----------------------------------------------------------
    def put_challenge(self, hostname: str, cert_pem: bytes, key_pem: bytes) -> None:
        """Serve this TLS-ALPN-01 challenge certificate (:func:`certificates.make_challenge_certificate`) to
        ClientHellos offering only ``acme-tls/1`` for ``hostname``. Builds the TLS object: call it off the loop."""
        if self.engine is not None:
            built = tlsengine.certkey(pem_cert_to_der(cert_pem.decode()), b"", key_pem)
        else:
            built = make_challenge_context(cert_pem, key_pem)
        self.challenges[hostname] = built

    def remove_challenge(self, hostname: str) -> None:
        self.challenges.pop(hostname, None)

    def challenge_object(self, server_name: str | None, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO):
        """The ``ssl`` fallback's connection for a validation (a ClientHello offering only ``acme-tls/1``): an
        ``SSLObject`` of the name's challenge context from the start, so that nothing of the default context (a
        session ticket, the session cache) applies; None when no answer is pending (the SNI callback refuses)."""
        ctx = self.challenges.get(server_name) if server_name else None
        if ctx is None or self.engine is not None:
            return None
        obj = ctx.wrap_bio(incoming, outgoing, server_side=True)  # type: ignore[attr-defined]
        obj.edgecert_sni = server_name
        return obj

    def set_min_tls(self, hostname: str, version: str | None) -> None:
        """``hostname``'s ``min_tls_version`` (``"1.2"``, ``"1.3"`` or None: the edge's floor, TLS 1.2)."""
        v = TLS_VERSIONS.get(version or "")
        if v is not None and v > TLS_VERSIONS["1.2"]:
            self.min_tls[hostname] = v
        else:
            self.min_tls.pop(hostname, None)

    def min_tls_for(self, name: str) -> int | None:
        """The TLS floor of a normalised SNI name: its own, else its wildcard's one label up."""
        v = self.min_tls.get(name)
        if v is None:
            dot = name.find(".")
            if dot > 0:
                v = self.min_tls.get("*" + name[dot:])
        return v

    # -- readers ---------------------------------------------------------------------------------------------
    def lookup(self, name: str) -> CertEntry | None:
        e = self._exact.get(name)
        if e is not None:
            return e
        dot = name.find(".")
        if dot > 0:
            return self._exact.get("*" + name[dot:])
        return None

    def get(self, hostname: str) -> CertEntry | None:
        return self._exact.get(hostname)

    def host_settings(self, name: str) -> HostSettings | None:
        """The per-hostname settings that apply to ``name`` (memory only): its own, else -- for a name with no
        domain of its own -- the wildcard's one label up; None: the global settings apply."""
        routes = self.routes
        s = routes.get(name)
        if s is not None or not routes or name in self._exact:
            return s
        dot = name.find(".")
        return routes.get("*" + name[dot:]) if dot > 0 else None

    def context_for(self, entry: CertEntry, *, warm: bool = False):
        """The built TLS object of ``entry`` (an SSLContext, or a CertKey with the engine), from the LRU or built
        now (which also proves that the key matches the certificate)."""
        ctx = entry._ctx
        if ctx is not None:
            if not warm:
                try:
                    self._lru.move_to_end(id(entry))
                except KeyError:  # evicted meanwhile (another thread), or built by put(prebuild) not yet listed
                    pass
            return ctx
        t0 = time.perf_counter()
        ctx = self._builder(entry)
        dt_build = time.perf_counter() - t0
        with self._wlock:
            if entry._ctx is not None:  # built meanwhile by the other thread
                return entry._ctx
            lru = self._lru
            if warm and len(lru) >= self._max:
                return ctx  # the LRU filled up meanwhile: prewarming never evicts
            self.builds += 1
            self.build_seconds += dt_build
            entry._ctx = ctx
            lru[id(entry)] = entry
            if warm:
                self.prewarmed += 1
                lru.move_to_end(id(entry), last=False)  # cold end: used contexts are evicted last
            while len(lru) > self._max:
                _, evicted = lru.popitem(last=False)
                evicted._ctx = None
        return ctx

    def context_count(self) -> int:
        return len(self._lru)

    def stats(self) -> dict:
        return {"entries": len(self._exact), "contexts": len(self._lru), "max_contexts": self._max,
                "contexts_built": self.builds, "built_on_handshake": self.builds_on_handshake,
                "prewarmed": self.prewarmed, "build_ms_avg": round(1000 * self.build_seconds / self.builds, 3)
                if self.builds else None}

    # -- prewarm ---------------------------------------------------------------------------------------------
    def start_prewarm(self, *, nice: int = 0, quiet: float = 0.005, max_defer: float = 0.35) -> None:
        """Build contexts in a background thread until the LRU is full; entries put later are queued too. Never
        evicts: it only fills free slots. Idempotent.

        Handshakes come first: a build starts only after ``quiet`` seconds without any handshake, or after
        ``max_defer`` seconds of continuous load (so that warming still progresses, at ~0.7 ms per 350 ms, while
        the misses of a busy server build on the handshake path anyway); an idle server builds back to back. A
        build that overlaps a handshake slows it down (they share the core), which is what the cold-name p99 of
        an edge that warms while it serves shows. The thread runs at ``nice`` (per thread, Linux), 0 by default and
        deliberately not 19: a low-priority thread that holds the GIL and is starved by the scheduler (other
        processes on the core) stalls the event loop behind it -- priority inversion, measured here as 9-15 ms
        cold-handshake p99s with nice 10-19 on a shared core."""
        if self._warm_thread is not None:
            return
        self._warm_q = deque(h for h, e in list(self._exact.items()) if e._ctx is None)
        self._warm_ev = threading.Event()
        self._warm_ev.set()
        self._warm_stop = False
        self._warm_thread = threading.Thread(target=self._prewarm_loop, args=(nice, quiet, max_defer),
                                             name="edgecert-prewarm", daemon=True)
        self._warm_thread.start()

    def stop_prewarm(self) -> None:
        self._warm_stop = True
        if self._warm_ev is not None:
            self._warm_ev.set()
        t = self._warm_thread
        if t is not None:
            t.join(timeout=5)
        self._warm_thread = None
        self._warm_q = None

    def _prewarm_loop(self, nice: int, quiet: float, max_defer: float) -> None:
        try:  # per-thread on Linux: the handshakes (main thread) keep their priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except (OSError, AttributeError):
            pass
        q, ev = self._warm_q, self._warm_ev
        assert q is not None and ev is not None
        seen = self.handshakes
        while not self._warm_stop:
            if not q or len(self._lru) >= self._max:
                self.warm_done.set()
                ev.wait()
                ev.clear()
                continue
            try:
                h = q.popleft()
            except IndexError:
                continue
            e = self._exact.get(h)
            if e is None or e._ctx is not None:
                continue
            if self.handshakes != seen:  # busy: wait for a quiet moment (at most max_defer)
                deadline = time.monotonic() + max_defer
                while self.handshakes != seen and not self._warm_stop and time.monotonic() < deadline:
                    seen = self.handshakes
                    time.sleep(quiet)
                seen = self.handshakes
                if e._ctx is not None or self._exact.get(h) is not e:
                    continue
            try:
                self.context_for(e, warm=True)
            except (ssl.SSLError, OSError, ValueError) as exc:
                log.warning("cannot build the TLS context of %s: %s", h, exc)
            except Exception:  # noqa: BLE001 - never let the thread die (e.g. a key that does not decrypt)
                log.exception("cannot build the TLS context of %s", h)
            # Let the event loop take the GIL now. A build holds it throughout, so a handshake that arrived
            # meanwhile has not reached select() (``self.handshakes`` unchanged): without this pause the next check
            # reads "quiet" and builds follow back to back until the interpreter's switch interval (5 ms) forces a
            # hand-over -- measured at 100k names: cold-name p99 2.1-2.6 ms with the prewarm running, 1.3 ms without.
            time.sleep(_BUILD_PAUSE)

    def select(self, server_name: str | None):
        """The engine's certificate callback (edge/tls_edge/_edgetls.c, in the handshake, GIL held): the CertKey for
        ``server_name`` or None for the default certificate. Memory only, like :meth:`_sni_callback`."""
        self.handshakes += 1
        if server_name is None:
            self._outcome(SniOutcome.DEFAULT)
            return None
        return self._built_for(server_name.lower().rstrip("."))

    def _sni_callback(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext):
        """Python's ssl sni_callback (no engine): switch the connection to the name's SSLContext."""
        self.handshakes += 1
        if server_name is None:
            self._outcome(SniOutcome.DEFAULT)
            return None
        name = server_name.lower().rstrip(".")
        sslobj.edgecert_sni = name  # read by the HTTP layer for the Host == SNI check
        if self.challenges or self.min_tls:
            # The ClientHello as the HTTP layer parsed it (edge/tls_edge/clienthello.py): the same rules as the
            # engine's ClientHello callback.
            hello = getattr(sslobj, "edgecert_hello", None)
            if hello is not None and hello.acme_only:
                answer = self.challenges.get(name)
                if answer is None:
                    return _NO_APPLICATION_PROTOCOL
                sslobj.context = answer
                return None
            floor = self.min_tls_for(name) if self.min_tls else None
            if floor is not None and (hello is None or hello.max_version < floor):
                return ssl.ALERT_DESCRIPTION_PROTOCOL_VERSION
        ctx = self._built_for(name)
        if ctx is not None:
            sslobj.context = ctx
        return None

    def _built_for(self, name: str):
        """The built TLS object (SSLContext or CertKey) for a normalised SNI name, or None (default certificate);
        counts the outcome. A miss builds in memory; a failure serves the default certificate."""
        entry = self.lookup(name)
        if entry is None:
            self._outcome(SniOutcome.UNKNOWN)
            return None
        built = entry._ctx
        if built is None:
            try:
                built = self.context_for(entry)
                self.builds_on_handshake += 1
            except Exception:  # noqa: BLE001 - ssl.SSLError, a key that does not decrypt or match...
                log.exception("cannot load the certificate of %s; serving the default certificate", name)
                self._outcome(SniOutcome.UNKNOWN)
                return None
        else:
            try:
                self._lru.move_to_end(id(entry))
            except KeyError:
                pass
        self._outcome(SniOutcome.KNOWN)
        return built

    def _outcome(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)


def load_min_tls_rows(index: SniIndex, rows: Iterable[tuple[str, str | None]], *,
                      hostnames: Iterable[str] | None = None) -> int:
    """Apply ``(hostname, min_tls_version)`` rows (``store.readonly.EdgeStore.min_tls_rows``) to the index's TLS
    floors; with ``hostnames``, those names without a row lose theirs. Returns how many rows were applied."""
    n = 0
    seen: set[str] = set()
    for h, version in rows:
        index.set_min_tls(h, version)
        seen.add(h)
        n += 1
    for h in hostnames or ():
        if h not in seen:
            index.set_min_tls(h, None)
    return n


def load_index_rows(index: SniIndex, rows: Iterable[tuple], keybox, *, hostnames: Iterable[str] | None = None,
                    batch: int = 5000) -> int:
    """Put store rows (``store.readonly.SERVED_ROW``: hostname, cert_id, cert_pem, chain_pem, key_enc) into
    the index as compact entries, unchanged ones skipped; with ``hostnames``, names without a row are removed.
    Returns how many were put."""
    gc_was = gc.isenabled()
    gc.disable()  # 100k long-lived objects: the collector would walk them again and again while they are created
    try:
        n = 0
        seen: set[str] | None = set() if hostnames is not None else None
        get = index.get
        pending: list[CertEntry] = []
        for h, cert_id, cert_pem, chain_pem, key_enc in rows:
            if seen is not None:
                seen.add(h)
            cur = get(h)
            if cur is not None and cur.cert_id == cert_id:
                continue
            try:
                pending.append(entry_from_row(h, cert_id, cert_pem, chain_pem, key_enc, keybox))
            except ValueError:
                log.error("the stored certificate of %s does not parse; not serving it", h)
                continue
            if len(pending) >= batch:
                n += index.put_many(pending)
                pending = []
        if pending:
            n += index.put_many(pending)
        if seen is not None:
            for h in hostnames:  # type: ignore[union-attr]
                if h not in seen and h in index:
                    index.remove(h)
        return n
    finally:
        if gc_was:
            gc.enable()
