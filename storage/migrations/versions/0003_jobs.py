"""The job table: group (orchestrator) jobs and their processing jobs, for every bulk operation.

Revision ID: 0003
Revises: 0002

Unpartitioned on purpose (one queue for the whole fleet); every row names its partition, and every lookup
on behalf of a client filters by it. A group job has ``group_id = id``.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE job (
            id varchar(32) PRIMARY KEY,
            group_id varchar(32) NOT NULL,
            kind varchar(32) NOT NULL,
            partition varchar(64) NOT NULL,
            ordinal integer NOT NULL DEFAULT 0,
            definition jsonb NOT NULL,
            definition_hash char(64) NOT NULL,
            status varchar(16) NOT NULL,
            priority smallint NOT NULL DEFAULT 0,
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL,
            version integer NOT NULL DEFAULT 0,
            worker varchar(200),
            heartbeat_at timestamptz,
            released_at timestamptz,
            progress jsonb NOT NULL DEFAULT '{}'::jsonb,
            result jsonb,
            error jsonb,
            request_url text,
            transaction_time timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            ended_at timestamptz,
            expires_at timestamptz,
            cancel_requested boolean NOT NULL DEFAULT false,
            CONSTRAINT ck_job_status
                CHECK (status IN ('queued', 'planning', 'running', 'completed', 'failed', 'cancelled'))
        );
        -- The API's lookups and listings: a partition's group jobs by kind, newest first.
        CREATE INDEX ix_job_partition_groups ON job (partition, kind, created_at) WHERE id = group_id;
        -- A group's processing jobs; a plan stored twice adds nothing (same definition, same hash).
        CREATE UNIQUE INDEX ux_job_group_definition ON job (group_id, definition_hash) WHERE id <> group_id;
        -- Queued work by group, in plan order: what the release window picks from.
        CREATE INDEX ix_job_group_queued ON job (group_id, priority DESC, ordinal)
            WHERE status = 'queued' AND id <> group_id;
        -- Active processing jobs by group: "is anything of this group still queued or running?"
        CREATE INDEX ix_job_active ON job (partition, group_id)
            WHERE status IN ('queued', 'planning', 'running');
        -- Work in flight (released to the broker or running), by partition and group: the window counts.
        CREATE INDEX ix_job_in_flight ON job (partition, group_id)
            WHERE id <> group_id AND (status = 'running' OR (status = 'queued' AND released_at IS NOT NULL));
        -- Active group jobs (few), and failed processing jobs by group (a group fails with its first one).
        CREATE INDEX ix_job_active_groups ON job (status, created_at)
            WHERE id = group_id AND status IN ('queued', 'planning', 'running');
        CREATE INDEX ix_job_failed_parts ON job (group_id, ended_at)
            WHERE status = 'failed' AND id <> group_id;
        -- Stale heartbeats: what the sweeper takes over.
        CREATE INDEX ix_job_heartbeat ON job (heartbeat_at) WHERE status IN ('planning', 'running');
        -- Expiry of finished group jobs.
        CREATE INDEX ix_job_expires ON job (expires_at) WHERE id = group_id AND expires_at IS NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE job;")
