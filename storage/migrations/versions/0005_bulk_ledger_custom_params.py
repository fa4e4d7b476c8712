"""Bulk edit ledger and a partition's custom search parameters.

Revision ID: 0005
Revises: 0004

``bulk_ledger``: one row per batch a bulk update or bulk delete committed, written in the same transaction
as the batch, so that counts stay exact when a processing job is retried or cancelled.

``custom_search_param``: the SearchParameter resources of a partition that Bulkhead indexes, with their
state: ``reindexing`` (indexed on every write, not yet searchable) until the partition's reindex completes,
then ``active``.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE bulk_ledger (
            partition_id integer NOT NULL REFERENCES partition (id),
            group_id varchar(32) NOT NULL,
            job_id varchar(64) NOT NULL,
            resource_type varchar(64) NOT NULL,
            count integer NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX ix_bulk_ledger_group ON bulk_ledger (partition_id, group_id);

        CREATE TABLE custom_search_param (
            partition_id integer NOT NULL REFERENCES partition (id),
            resource_id varchar(64) NOT NULL,
            url text NOT NULL,
            code varchar(100) NOT NULL,
            definition jsonb NOT NULL,
            definition_hash char(64) NOT NULL,
            status varchar(16) NOT NULL,
            reindex_job varchar(32),
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (partition_id, resource_id),
            CONSTRAINT ck_custom_search_param_status CHECK (status IN ('reindexing', 'active'))
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE custom_search_param; DROP TABLE bulk_ledger;")
