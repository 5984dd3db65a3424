"""several issuers, challenge methods, profiles and per-hostname settings

domains: validation (requested method), validation_method (the one that last worked), profile, origin,
min_tls_version, custom_metadata (JSON object), http2 (None: the global default), origin_public_only (the origin
was set by a tenant: public addresses only), delegation_seen_at (the
_acme-challenge CNAME delegation last seen). tenants: origin. certificates: issuer_directory, profile, challenge.
acme_orders: directory_url, profile, challenge.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('domains', schema=None) as b:
        b.add_column(sa.Column('validation', sa.String(length=16), nullable=False, server_default='auto'))
        b.add_column(sa.Column('validation_method', sa.String(length=16), nullable=True))
        b.add_column(sa.Column('profile', sa.String(length=64), nullable=True))
        b.add_column(sa.Column('origin', sa.Text(), nullable=True))
        b.add_column(sa.Column('min_tls_version', sa.String(length=8), nullable=True))
        b.add_column(sa.Column('custom_metadata', sa.Text(), nullable=True))
        b.add_column(sa.Column('http2', sa.Boolean(), nullable=True))
        b.add_column(sa.Column('origin_public_only', sa.Boolean(), nullable=True))
        b.add_column(sa.Column('delegation_seen_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('tenants', schema=None) as b:
        b.add_column(sa.Column('origin', sa.Text(), nullable=True))
    with op.batch_alter_table('certificates', schema=None) as b:
        b.add_column(sa.Column('issuer_directory', sa.String(length=500), nullable=True))
        b.add_column(sa.Column('profile', sa.String(length=64), nullable=True))
        b.add_column(sa.Column('challenge', sa.String(length=16), nullable=True))
    with op.batch_alter_table('acme_orders', schema=None) as b:
        b.add_column(sa.Column('directory_url', sa.String(length=500), nullable=True))
        b.add_column(sa.Column('profile', sa.String(length=64), nullable=True))
        b.add_column(sa.Column('challenge', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('acme_orders', schema=None) as b:
        for c in ('challenge', 'profile', 'directory_url'):
            b.drop_column(c)
    with op.batch_alter_table('certificates', schema=None) as b:
        for c in ('challenge', 'profile', 'issuer_directory'):
            b.drop_column(c)
    with op.batch_alter_table('tenants', schema=None) as b:
        b.drop_column('origin')
    with op.batch_alter_table('domains', schema=None) as b:
        for c in ('delegation_seen_at', 'origin_public_only', 'http2', 'custom_metadata', 'min_tls_version', 'origin', 'profile',
                  'validation_method', 'validation'):
            b.drop_column(c)
