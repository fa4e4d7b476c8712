"""Jobs record the client that started them.

Revision ID: 0006
Revises: 0005

``job.client_id``: the token's client (``client_id``, ``azp`` or ``sub``) of the request that started a group
job, NULL when authentication was off. Lookups on behalf of a client filter by it.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE job ADD COLUMN client_id varchar(256);
        -- A client's own group jobs of a partition, newest first (its listing).
        CREATE INDEX ix_job_partition_client ON job (partition, client_id, created_at) WHERE id = group_id;

        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX ix_job_partition_client;
        ALTER TABLE job DROP COLUMN client_id;
        """
    )
