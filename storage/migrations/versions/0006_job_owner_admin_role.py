"""Jobs record the client that started them; the ``bulkhead.admin`` flag no longer opens any policy.

Revision ID: 0006
Revises: 0005

``job.client_id``: the token's client (``client_id``, ``azp`` or ``sub``) of the request that started a group
job, NULL when authentication was off. Lookups on behalf of a client filter by it.

Row-level security used to let any transaction that set ``bulkhead.admin`` see every partition, and any
statement of the application role could set it. The policies that named ``bulkhead_is_admin()`` are dropped
here with the function; ``storage.security.secure_schema``, which runs in the same transaction after the
migrations, creates the new ones: a tenant policy that compares with the session's partition only, and an
administrative policy for the administrative role only.
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

        DO $$
        DECLARE p record;
        BEGIN
            FOR p IN
                SELECT schemaname, tablename, policyname FROM pg_policies
                WHERE schemaname = 'public'
                  AND (coalesce(qual, '') LIKE '%bulkhead_is_admin%'
                       OR coalesce(with_check, '') LIKE '%bulkhead_is_admin%')
            LOOP
                EXECUTE format('DROP POLICY %I ON %I.%I', p.policyname, p.schemaname, p.tablename);
            END LOOP;
        END $$;
        DROP FUNCTION IF EXISTS bulkhead_is_admin();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION bulkhead_is_admin() RETURNS boolean
            LANGUAGE sql STABLE PARALLEL SAFE AS
            $$ SELECT coalesce(current_setting('bulkhead.admin', true), '') = 'on' $$;
        DROP INDEX ix_job_partition_client;
        ALTER TABLE job DROP COLUMN client_id;
        """
    )
