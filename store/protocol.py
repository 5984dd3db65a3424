"""The storage seam: everything edgecert keeps, behind one Protocol (:class:`store.sql.SQLStorage` implements it).

Contract (read before writing another implementation, or a fake for tests):

* Safe for concurrent use: every method may be called at once from many tasks of one process and from several
  processes or nodes sharing the same database. Each call is one unit of work: it happens completely or not at all,
  and a read sees every write that completed before it (on any node).
* Nothing blocks the event loop: the ``async`` methods do their I/O off the loop. The few plain methods say so.
* "Not found" is ``None`` from ``get_*`` methods (and ``tenant_for_token``), an empty list from ``list_*`` methods,
  and :class:`NotFound` (a ``LookupError``) from methods that change a named thing. Adding a name that exists raises
  :class:`Conflict`.
* Leases (locks): :meth:`Storage.lock` / :meth:`Storage.try_lock` take a named lease held by one owner (this storage
  object) at a time across processes and nodes. A lease expires ``ttl`` seconds after it was last taken or renewed
  (:meth:`Storage.renew_lock`), so a crashed holder never blocks others for long; a holder that works longer renews it
  (a heartbeat at a third of the ttl). Taking a lease one already holds succeeds and extends it. :meth:`Storage.unlock`
  releases only a lease this owner holds. Callers follow "lock, re-check, then work": after taking the lease they read
  the state again before acting, since another node may have done the work meanwhile.
* Private keys are passed in and out already encrypted (``bytes`` blobs from :class:`store.crypto.KeyBox`); tokens
  are stored as hashes only.
* Times are timezone-aware UTC, in and out.
* An unreachable database (refused or dropped connection, server shutting down or starting up) raises
  :class:`StoreUnavailable` from any method, whatever the driver; every other database error keeps its own type.
  It is transient: the caller retries later (the API answers 503 with ``Retry-After``).
* Change announcements: :meth:`Storage.notify_change` tells the other processes sharing the store that a hostname's
  served certificate changed, when the store can (PostgreSQL NOTIFY, see :mod:`store.notify`); otherwise it does
  nothing and the others notice at their next sweep (:meth:`Storage.changed_domains`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any, Protocol, Sequence, runtime_checkable

from .models import (AcmeAccount, AcmeOrder, ApiToken, CertificateVersion, ChallengeToken, Domain, DomainEvent,
                     Tenant, WebhookDelivery)

__all__ = ["Storage", "NotFound", "Conflict", "LockTimeout", "StoreUnavailable"]


class NotFound(LookupError):
    """The named thing to change does not exist (``args[0]`` is its name)."""


class Conflict(Exception):
    """The named thing to add exists already (``args[0]`` is its name)."""


class LockTimeout(TimeoutError):
    """:meth:`Storage.lock` could not take the lease within ``timeout`` (``args[0]`` is the lease's name)."""


class StoreUnavailable(Exception):
    """The database cannot be reached right now (connection refused or lost, server shutting down or starting up);
    nothing was changed by the failed call. ``reason`` says what the driver saw (for logs, not for tenants)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the database is unreachable: {reason}")
        self.reason = reason


@runtime_checkable
class Storage(Protocol):
    """What the service needs from a store. See the module docstring for the contract."""

    # tenants and tokens
    async def ensure_tenant(self, name: str) -> Tenant: ...
    async def get_tenant(self, name: str) -> Tenant | None: ...
    async def get_tenant_by_id(self, tenant_id: int) -> Tenant | None: ...
    async def list_tenants(self) -> list[Tenant]: ...
    async def set_tenant_origin(self, name: str, origin: str | None) -> Tenant:
        """The tenant's default origin (None: the global one); its domains count as changed (``updated_at``)."""
        ...
    async def add_token(self, tenant_id: int, token: str) -> ApiToken: ...
    async def revoke_tokens(self, tenant_id: int) -> int: ...
    async def tenant_for_token(self, token: str) -> Tenant | None: ...

    # domains
    async def add_domain(self, hostname: str, tenant_id: int, **fields: Any) -> Domain: ...
    async def supersede_unproven_claim(self, hostname: str, tenant_id: int, **fields: Any) -> tuple[Domain, int]:
        """Ownership before binding: another tenant's unproven claim on ``hostname`` is dropped and ``tenant_id``'s
        row added, atomically; returns (new row, dropped tenant id). :class:`Conflict` if the name is held
        otherwise, :class:`NotFound` if nobody holds it."""
        ...
    async def get_domain(self, hostname: str) -> Domain | None: ...
    async def list_domains(self, *, status: str | None = None, tenant_id: int | None = None,
                           limit: int = 1000, offset: int = 0, search: str | None = None,
                           prefix: str | None = None, after: tuple[str, str] | None = None,
                           issuer: str | None = None, expiring_before: dt.datetime | None = None,
                           probe: str | None = None, metadata: tuple[str, str] | None = None) -> list[Domain]:
        """Domains in natural hostname order (``sort_key``, then ``hostname``); ``search``: substring of the
        hostname, ``prefix``: its start; ``after``: keyset position ``(sort_key, hostname)`` of the last row seen;
        ``issuer``: the current certificate's issuer directory URL (exactly) or a part of its issuer name (any
        case); ``expiring_before``: the current certificate ends before then; ``probe``: ``failing`` | ``ok`` |
        ``unknown`` (the last self-probe); ``metadata``: ``(key, value)`` held exactly in ``custom_metadata``."""
        ...
    async def count_domains(self, *, status: str | None = None, tenant_id: int | None = None,
                            search: str | None = None, prefix: str | None = None, issuer: str | None = None,
                            expiring_before: dt.datetime | None = None, probe: str | None = None,
                            metadata: tuple[str, str] | None = None) -> int:
        """How many domains ``list_domains`` would return with these filters and no limit."""
        ...
    async def update_domain(self, hostname: str, **fields: Any) -> Domain:
        """Set ``fields`` (``custom_metadata`` may be given as a dict: it is stored as canonical JSON)."""
        ...
    async def delete_domain(self, hostname: str) -> None: ...
    async def due_domains(self, now: dt.datetime, *, limit: int = 500) -> list[Domain]: ...
    async def count_domains_by_status(self) -> dict[str, int]: ...
    async def changed_domains(self, since: dt.datetime) -> list[Domain]: ...

    # events
    async def add_event(self, hostname: str, kind: str, message: str, data: dict | None = None) -> DomainEvent: ...
    async def list_events(self, hostname: str, *, limit: int = 100, after_id: int = 0) -> list[DomainEvent]: ...

    # challenges
    async def put_challenge(self, token: str, key_authorization: str, hostname: str, *, kind: str = "http-01",
                            ttl: float = 3600) -> None: ...
    async def get_challenge(self, token: str) -> ChallengeToken | None: ...
    async def delete_challenge(self, token: str) -> None: ...

    # ACME accounts and orders
    async def get_account(self, directory_url: str, name: str = "default") -> AcmeAccount | None: ...
    async def save_account(self, account: AcmeAccount) -> AcmeAccount: ...
    async def save_order(self, order: AcmeOrder) -> AcmeOrder: ...
    async def open_order(self, domain_id: int) -> AcmeOrder | None:
        """The domain's newest order journal entry whose step is not terminal (``JournalStep.OPEN``)."""
    async def open_journal(self) -> list[tuple[str, AcmeOrder]]:
        """(hostname, entry) of every order journal entry whose step is not terminal."""
    async def get_order(self, order_id: int) -> AcmeOrder | None: ...
    async def install_from_journal(self, order_id: int, cert: CertificateVersion) -> CertificateVersion:
        """In one unit of work: store ``cert`` (not current) and move the entry to ``installed`` with its id; an
        entry installed already returns its certificate version (nothing new stored)."""
    async def journal_since(self, since: dt.datetime) -> list[AcmeOrder]:
        """Order journal entries created since ``since`` that the CA has (a URL)."""

    # certificates
    async def add_certificate(self, cert: CertificateVersion, *, make_current: bool = True) -> CertificateVersion: ...
    async def get_certificate(self, cert_id: int) -> CertificateVersion | None: ...
    async def current_certificates(self, hostnames: Sequence[str] | None = None
                                   ) -> list[tuple[Domain, CertificateVersion]]: ...

    def served_rows(self, hostnames: Sequence[str] | None = None) -> list[tuple]:
        """(hostname, cert_id, serial, sha256, not_after, names, cert_pem, chain_pem, key_enc) of every (or the
        named) domain's current certificate, for loading the SNI index. Blocking: call it from a worker thread."""
        ...

    def host_settings_rows(self, hostnames: Sequence[str] | None = None) -> list[tuple]:
        """(hostname, origin, min_tls_version, http2, origin_public_only) of every (or the named) domain with a
        per-hostname setting (``origin``: the domain's, else its tenant's), for the edge's routing table.
        Blocking."""
        ...

    # rate-limit ledger
    async def ledger_add(self, kind: str, scope: str, *, account_id: int | None = None,
                         at: dt.datetime | None = None, order_id: int | None = None,
                         reserved: bool = False) -> int: ...
    async def ledger_delete(self, entry_id: int) -> None: ...
    async def ledger_confirm(self, entry_ids: Sequence[int], *, order_id: int | None,
                             at: dt.datetime | None = None) -> int:
        """Reserved rows become actions of the CA (of order ``order_id``); returns how many were still reserved."""
    async def ledger_release(self, entry_ids: Sequence[int]) -> int:
        """Delete those of the rows that are still reservations."""
    async def ledger_drop_reservations(self, before: dt.datetime) -> int:
        """Delete every reservation made before ``before`` or held by a process of this host that is gone
        (start-up reconciliation)."""
    async def ledger_counted_orders(self, kind: str, order_ids: Sequence[int]) -> set[int]:
        """Which of ``order_ids`` have a confirmed ``kind`` row."""
    async def ledger_prune(self, before: dt.datetime) -> int: ...
    async def ledger_times(self, kind: str, scope: str, since: dt.datetime) -> list[dt.datetime]: ...

    # webhook delivery log
    async def add_webhook_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> int: ...
    async def due_webhook_deliveries(self, now: dt.datetime, *, limit: int = 100) -> list[WebhookDelivery]:
        """Pending deliveries whose next attempt is due at ``now``, oldest first."""
        ...

    async def next_webhook_attempt_at(self) -> dt.datetime | None:
        """When the earliest pending delivery is due (None: nothing is pending)."""
        ...

    async def claim_webhook_delivery(self, delivery_id: int, *, attempts: int, until: dt.datetime) -> bool:
        """Claim a pending delivery for one attempt: True for exactly one caller among all processes. ``attempts``
        is the count the caller read (the row's version); the claim counts the attempt and keeps the row from being
        due again before ``until`` (a claimer that dies is retried then)."""
        ...

    async def update_webhook_delivery(self, delivery_id: int, **fields: Any) -> None: ...
    async def list_webhook_deliveries(self, *, status: str | None = None, hostname: str | None = None,
                                      kind: str | None = None, limit: int = 100,
                                      after_id: int = 0) -> list[WebhookDelivery]:
        """Newest first; with ``after_id`` > 0 only rows with a larger id, oldest first."""
        ...

    # leases (locks) and change announcements
    def lock(self, name: str, *, ttl: float = 600,
             timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the named lease for the ``async with`` block, waiting for it (:class:`LockTimeout` after
        ``timeout`` seconds; None: no limit)."""
        ...

    async def try_lock(self, name: str, *, ttl: float = 600) -> bool:
        """Take the named lease if it is free, expired or already ours; never waits."""
        ...

    async def renew_lock(self, name: str, *, ttl: float = 600) -> bool:
        """Extend a lease we hold by ``ttl`` from now (False: it expired and someone else holds it now)."""
        ...

    async def unlock(self, name: str) -> None: ...

    async def release_dead_local_leases(self) -> int:
        """Drop the leases of earlier processes of this host that are gone; returns how many."""
        ...

    async def notify_change(self, hostname: str) -> None:
        """Announce that ``hostname``'s served certificate changed (a no-op where the store cannot)."""
        ...

    @property
    def notifies(self) -> bool:
        """True when :meth:`notify_change` reaches the other processes (listen with
        :func:`store.notify.listening`); False when they only learn of changes at their next sweep."""
        ...

    def close(self) -> None:
        """Release connections (blocking)."""
        ...
