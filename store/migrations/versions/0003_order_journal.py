"""order journal: acme_orders.step/expires_at/fullchain_pem/cert_id/retries/tokens; rate_ledger.order_id/reserved/owner

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('acme_orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('step', sa.String(length=16), nullable=False, server_default='abandoned'))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('fullchain_pem', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('cert_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('retries', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('tokens', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_acme_orders_step'), ['step'], unique=False)
    # Orders that were in flight continue from their URL (or from their key and CSR when the CA never answered).
    op.execute("UPDATE acme_orders SET step = 'ordered' WHERE url IS NOT NULL "
               "AND status IN ('pending', 'ready', 'processing')")
    op.execute("UPDATE acme_orders SET step = 'intent' WHERE url IS NULL AND status = 'creating'")
    op.execute("UPDATE acme_orders SET step = 'current' WHERE status = 'valid'")
    op.execute("UPDATE acme_orders SET step = 'invalid' WHERE status IN ('invalid', 'failed')")

    with op.batch_alter_table('rate_ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('order_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reserved', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('owner', sa.String(length=100), nullable=True))
        batch_op.create_index(batch_op.f('ix_rate_ledger_order_id'), ['order_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rate_ledger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rate_ledger_order_id'))
        batch_op.drop_column('owner')
        batch_op.drop_column('reserved')
        batch_op.drop_column('order_id')
    with op.batch_alter_table('acme_orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_acme_orders_step'))
        batch_op.drop_column('tokens')
        batch_op.drop_column('retries')
        batch_op.drop_column('cert_id')
        batch_op.drop_column('fullchain_pem')
        batch_op.drop_column('expires_at')
        batch_op.drop_column('step')
