"""Table models (SQLModel). All times are timezone-aware UTC. Schema changes go through ``store/migrations``."""

from __future__ import annotations

import datetime as dt
import re
from typing import Optional

from sqlalchemy import Column, LargeBinary, Text, UniqueConstraint, Index
from sqlmodel import Field, SQLModel

__all__ = ["WebhookDelivery", "Tenant", "ApiToken", "Domain", "AcmeAccount", "AcmeOrder", "JournalStep", "CertificateVersion", "ChallengeToken",
           "DomainEvent", "Lease", "RateLedgerEntry", "utcnow", "DomainStatus",
           "natural_key"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


_DIGITS = re.compile(r"[0-9]+")


def natural_key(hostname: str) -> str:
    """A text key whose plain (byte) order is the natural order of hostnames: each run of digits becomes its length
    in three digits followed by the digits without leading zeros, so ``d9 < d10 < d99 < d989``. Ties (``d01`` and
    ``d1``) are broken by the hostname itself."""
    def run(m: re.Match) -> str:
        digits = m.group(0).lstrip("0") or "0"
        return f"{len(digits):03d}{digits}"
    return _DIGITS.sub(run, hostname.lower())


class DomainStatus:
    """The lifecycle of a tenant domain (public values of ``status``)."""

    PENDING_OWNERSHIP = "pending_ownership"  # claimed with a tenant token; waiting for the ownership TXT record
    PENDING_DNS = "pending_dns"            # waiting for the tenant's DNS record to point at the edge
    PENDING_ISSUANCE = "pending_issuance"  # DNS is right; waiting for (or retrying) the CA
    ISSUING = "issuing"                    # an order is in flight with the CA
    RATE_LIMITED = "rate_limited"          # a CA rate limit holds issuance until ``retry_at``
    ACTIVE = "active"                      # a valid certificate for the name is served by the edge
    FAILED = "failed"                      # a final error (e.g. rejectedIdentifier, CAA): an operator must act
    EXPIRED = "expired"                    # the last certificate expired and no new one could be obtained

    ALL = (PENDING_OWNERSHIP, PENDING_DNS, PENDING_ISSUANCE, ISSUING, RATE_LIMITED, ACTIVE, FAILED, EXPIRED)


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=100)
    origin: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))  # upstream URL for its domains
    created_at: dt.datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A tenant's API token, stored as SHA-256 of the secret (the secret itself is shown once)."""

    __tablename__ = "api_tokens"
    id: Optional[int] = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", index=True)
    token_hash: str = Field(index=True, unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    created_at: dt.datetime = Field(default_factory=utcnow)
    revoked_at: Optional[dt.datetime] = None


class Domain(SQLModel, table=True):
    __tablename__ = "domains"
    id: Optional[int] = Field(default=None, primary_key=True)
    hostname: str = Field(index=True, unique=True, max_length=253)
    tenant_id: int = Field(foreign_key="tenants.id", index=True)
    status: str = Field(default=DomainStatus.PENDING_DNS, index=True, max_length=32)
    last_error: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    last_error_code: Optional[str] = Field(default=None, max_length=64)
    # When the sweep should look at this domain next (DNS re-check, retry, renewal); None: nothing due.
    next_check_at: Optional[dt.datetime] = Field(default=None, index=True)
    next_renewal_at: Optional[dt.datetime] = None
    retry_at: Optional[dt.datetime] = None
    attempts: int = 0
    dns_attempts: int = 0
    dns_observed: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    current_cert_id: Optional[int] = Field(default=None)
    key_type: Optional[str] = Field(default=None, max_length=16)
    renew_requested: bool = False
    # ARI (RFC 9773): the CA's suggested window for the current certificate and when to ask again.
    ari_window_start: Optional[dt.datetime] = None
    ari_window_end: Optional[dt.datetime] = None
    ari_next_check_at: Optional[dt.datetime] = None
    renewal_reason: Optional[str] = Field(default=None, max_length=32)
    # Self-probe: the last real handshake against the public edge address.
    last_probe_at: Optional[dt.datetime] = None
    last_probe_ok: Optional[bool] = None
    last_probe: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    expiry_warned_days: Optional[int] = None
    # Reload hook / post-swap verification state of the current certificate.
    hook_pending: bool = False
    served_serial: Optional[str] = Field(default=None, max_length=80)
    # Ownership before binding: a name claimed with a tenant token is bound (ordered, served) only once the
    # tenant's _edgecert-verify TXT record was seen (``ownership_verified_at``). Operator-added names: not required.
    ownership_required: bool = False
    ownership_verified_at: Optional[dt.datetime] = None
    # Natural order of ``hostname`` (d9 < d10 < d99 < d989): see :func:`natural_key`; set by the store on insert.
    sort_key: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True, index=True))
    # How the CA may validate the name: ``auto`` | ``http-01`` | ``tls-alpn-01`` | ``dns-01`` (requested), and the
    # method that last worked (renewals try it first).
    validation: str = Field(default="auto", max_length=16)
    validation_method: Optional[str] = Field(default=None, max_length=16)
    # The ACME profile to ask for (None: the issuer's / global default).
    profile: Optional[str] = Field(default=None, max_length=64)
    # Per-hostname settings (None: the tenant's, else the global one): upstream URL, lowest TLS version served
    # (``1.2`` | ``1.3``), HTTP/2 offered, and the operator's own key/value metadata (a JSON object).
    origin: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    # ``origin`` was set with a tenant token: the edge connects to it only at public addresses (DNS rebinding).
    origin_public_only: Optional[bool] = None
    min_tls_version: Optional[str] = Field(default=None, max_length=8)
    http2: Optional[bool] = None
    custom_metadata: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    # When the tenant's _acme-challenge CNAME delegation (DNS-01) was last seen in place.
    delegation_seen_at: Optional[dt.datetime] = None
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow, index=True)

    @property
    def ownership_pending(self) -> bool:
        """Claimed with a tenant token and not proven yet: nothing may be ordered or served for it."""
        return bool(self.ownership_required) and self.ownership_verified_at is None


class AcmeAccount(SQLModel, table=True):
    __tablename__ = "acme_accounts"
    __table_args__ = (UniqueConstraint("directory_url", "name"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    directory_url: str = Field(max_length=500)
    name: str = Field(default="default", max_length=100)
    email: Optional[str] = Field(default=None, max_length=254)
    uri: Optional[str] = Field(default=None, max_length=500)
    key_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: dt.datetime = Field(default_factory=utcnow)


class JournalStep:
    """The order journal's steps (``AcmeOrder.step``), each persisted BEFORE the effect at the CA it names, so a
    restart continues from the last durable one: ``intent`` (key and CSR kept, no order yet) -> ``ordered`` (the
    order URL, stored the moment newOrder answers) -> ``authorizing`` (challenge answers about to be sent) ->
    ``finalizing`` (the CSR about to be sent) -> ``downloaded`` (the certificate kept here) -> ``installed`` (stored
    as a certificate version) -> ``current`` (served). ``invalid`` (the CA's verdict) and ``abandoned`` end an
    entry too."""

    INTENT = "intent"
    ORDERED = "ordered"
    AUTHORIZING = "authorizing"
    FINALIZING = "finalizing"
    DOWNLOADED = "downloaded"
    INSTALLED = "installed"
    CURRENT = "current"
    INVALID = "invalid"
    ABANDONED = "abandoned"

    ALL = (INTENT, ORDERED, AUTHORIZING, FINALIZING, DOWNLOADED, INSTALLED, CURRENT, INVALID, ABANDONED)
    TERMINAL = (CURRENT, INVALID, ABANDONED)
    OPEN = (INTENT, ORDERED, AUTHORIZING, FINALIZING, DOWNLOADED, INSTALLED)
    #: Steps after which the CA has issued: the certificate is installed, never ordered again.
    ISSUED = (DOWNLOADED, INSTALLED)


class AcmeOrder(SQLModel, table=True):
    """One entry of a name's order journal (see :class:`JournalStep`): an order from intent to served."""

    __tablename__ = "acme_orders"
    id: Optional[int] = Field(default=None, primary_key=True)
    domain_id: int = Field(index=True)
    account_id: int = Field(index=True)
    url: Optional[str] = Field(default=None, max_length=500)
    status: str = Field(default="pending", max_length=32)
    names: str = Field(sa_column=Column(Text, nullable=False))
    replaces: Optional[str] = Field(default=None, max_length=300)
    csr_pem: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    key_enc: Optional[bytes] = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    error: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    is_renewal: bool = False
    step: str = Field(default=JournalStep.INTENT, max_length=16, index=True)
    expires_at: Optional[dt.datetime] = None                  # the order's expiry at the CA
    fullchain_pem: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))  # once downloaded
    cert_id: Optional[int] = None                             # the certificate version, once installed
    retries: int = 0                                          # transient failures (same order retried)
    tokens: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON [[name, kind, token]]
    directory_url: Optional[str] = Field(default=None, max_length=500)  # the issuer (ACME directory) of the order
    profile: Optional[str] = Field(default=None, max_length=64)
    challenge: Optional[str] = Field(default=None, max_length=16)
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class CertificateVersion(SQLModel, table=True):
    __tablename__ = "certificates"
    id: Optional[int] = Field(default=None, primary_key=True)
    domain_id: int = Field(index=True)
    names: str = Field(sa_column=Column(Text, nullable=False))
    serial: str = Field(max_length=80, index=True)
    not_before: dt.datetime
    not_after: dt.datetime
    issuer: str = Field(sa_column=Column(Text, nullable=False))
    sha256: str = Field(max_length=64, index=True)
    cert_pem: str = Field(sa_column=Column(Text, nullable=False))
    chain_pem: str = Field(sa_column=Column(Text, nullable=False))
    key_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    key_type: str = Field(max_length=16)
    source: str = Field(default="acme", max_length=16)
    order_id: Optional[int] = None
    ari_cert_id: Optional[str] = Field(default=None, max_length=300)
    issuer_directory: Optional[str] = Field(default=None, max_length=500)  # the ACME directory that issued it
    profile: Optional[str] = Field(default=None, max_length=64)            # the ACME profile it was ordered with
    challenge: Optional[str] = Field(default=None, max_length=16)          # the challenge method that validated it
    created_at: dt.datetime = Field(default_factory=utcnow)


class ChallengeToken(SQLModel, table=True):
    __tablename__ = "challenge_tokens"
    token: str = Field(primary_key=True, max_length=200)
    key_authorization: str = Field(sa_column=Column(Text, nullable=False))
    hostname: str = Field(max_length=253, index=True)
    kind: str = Field(default="http-01", max_length=20)
    created_at: dt.datetime = Field(default_factory=utcnow)
    expires_at: dt.datetime


class DomainEvent(SQLModel, table=True):
    __tablename__ = "domain_events"
    __table_args__ = (Index("ix_domain_events_host_id", "hostname", "id"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    hostname: str = Field(max_length=253)
    kind: str = Field(max_length=64)
    message: str = Field(sa_column=Column(Text, nullable=False))
    data: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: dt.datetime = Field(default_factory=utcnow, index=True)


class Lease(SQLModel, table=True):
    """A named lock with an owner and an expiry: the cross-process/cross-node lock on SQLite and PostgreSQL."""

    __tablename__ = "leases"
    name: str = Field(primary_key=True, max_length=300)
    owner: str = Field(max_length=100)
    expires_at: dt.datetime


class RateLedgerEntry(SQLModel, table=True):
    """One counted CA action (order, certificate, failed authorization) for the rate-limit ledger."""

    __tablename__ = "rate_ledger"
    __table_args__ = (Index("ix_rate_ledger_scope", "kind", "scope", "created_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    scope: str = Field(max_length=600)
    account_id: Optional[int] = None
    # The order journal entry the action belongs to; ``reserved``: held while the order is in flight, not yet an
    # action of the CA (confirmed when the CA acts, released on every other path, reconciled at start-up).
    order_id: Optional[int] = Field(default=None, index=True)
    reserved: bool = False
    owner: Optional[str] = Field(default=None, max_length=100)  # the storage (process) holding a reservation
    created_at: dt.datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    """One outgoing webhook delivery (HMAC-signed JSON POST), retried with backoff; the delivery log."""

    __tablename__ = "webhook_deliveries"
    id: Optional[int] = Field(default=None, primary_key=True)
    url: str = Field(max_length=1000)
    hostname: Optional[str] = Field(default=None, max_length=253, index=True)
    kind: str = Field(max_length=64)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="pending", max_length=16, index=True)  # pending | delivered | failed
    attempts: int = 0
    last_status_code: Optional[int] = None
    last_error: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    next_attempt_at: Optional[dt.datetime] = Field(default=None, index=True)
    created_at: dt.datetime = Field(default_factory=utcnow)
    delivered_at: Optional[dt.datetime] = None
