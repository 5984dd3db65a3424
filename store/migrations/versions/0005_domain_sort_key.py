"""domain sort key: natural order of hostnames (d9 < d10 < d99), for keyset pagination of GET /v1/domains

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""
import re

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _natural_key(hostname: str) -> str:
    # Frozen copy of store.models.natural_key as of this revision (a migration must not change with the code).
    def run(m: re.Match) -> str:
        digits = m.group(0).lstrip("0") or "0"
        return f"{len(digits):03d}{digits}"
    return re.sub(r"[0-9]+", run, hostname.lower())


def upgrade() -> None:
    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sort_key', sa.Text(), nullable=True))
    conn = op.get_bind()
    domains = sa.table('domains', sa.column('id', sa.Integer), sa.column('hostname', sa.String),
                       sa.column('sort_key', sa.Text))
    rows = conn.execute(sa.select(domains.c.id, domains.c.hostname)).all()
    for i in range(0, len(rows), 1000):
        conn.execute(domains.update().where(domains.c.id == sa.bindparam('b_id'))
                     .values(sort_key=sa.bindparam('b_key')),
                     [{'b_id': r.id, 'b_key': _natural_key(r.hostname)} for r in rows[i:i + 1000]])
    op.create_index('ix_domains_sort_key', 'domains', ['sort_key'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_domains_sort_key', table_name='domains')
    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.drop_column('sort_key')
