"""Search-index side tables: string, token, date, reference, number, quantity, uri.

Revision ID: 0002
Revises: 0001

Every row: partition_id, resource_type, param, surrogate_id (of the current, live version), then values.
Main indexes lead with (partition_id, resource_type, param) so that a search reads one partition's slice;
they INCLUDE surrogate_id so that matching ids come from index-only scans. The surrogate_id index serves
removal of a superseded version's rows, sorting and :missing.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_HEAD = """
    partition_id integer NOT NULL,
    resource_type varchar(64) NOT NULL,
    param varchar(100) NOT NULL,
    surrogate_id bigint NOT NULL,
"""

_TABLES = {
    "search_string": "value_norm text COLLATE \"C\" NOT NULL, value_exact text NOT NULL",
    "search_token": 'system text COLLATE "C", code text COLLATE "C", text text COLLATE "C"',
    "search_date": "low timestamptz NOT NULL, high timestamptz NOT NULL",
    "search_reference": 'target_type varchar(64), target_id varchar(64), url text COLLATE "C"',
    "search_number": "low numeric NOT NULL, high numeric NOT NULL",
    "search_quantity": (
        'system text COLLATE "C", code text COLLATE "C", unit text COLLATE "C", '
        "low numeric NOT NULL, high numeric NOT NULL"
    ),
    "search_uri": 'value text COLLATE "C" NOT NULL',
}

_INDEXES = [
    "ix_search_string_value ON search_string (partition_id, resource_type, param, value_norm)"
    " INCLUDE (surrogate_id)",
    "ix_search_token_code ON search_token (partition_id, resource_type, param, code, system)"
    " INCLUDE (surrogate_id)",
    "ix_search_date_low ON search_date (partition_id, resource_type, param, low)"
    " INCLUDE (surrogate_id, high)",
    "ix_search_date_high ON search_date (partition_id, resource_type, param, high)"
    " INCLUDE (surrogate_id, low)",
    "ix_search_reference_target ON search_reference"
    " (partition_id, resource_type, param, target_id, target_type) INCLUDE (surrogate_id)",
    "ix_search_reference_url ON search_reference (partition_id, resource_type, param, url)"
    " INCLUDE (surrogate_id) WHERE url IS NOT NULL",
    "ix_search_number_low ON search_number (partition_id, resource_type, param, low)"
    " INCLUDE (surrogate_id, high)",
    "ix_search_quantity_code ON search_quantity (partition_id, resource_type, param, code, low)"
    " INCLUDE (surrogate_id, high)",
    "ix_search_uri_value ON search_uri (partition_id, resource_type, param, value) INCLUDE (surrogate_id)",
]


def upgrade() -> None:
    for table, columns in _TABLES.items():
        op.execute(f"CREATE TABLE {table} ({_HEAD}{columns})")
        op.execute(f"CREATE INDEX ix_{table}_sid ON {table} (surrogate_id)")
    for index in _INDEXES:
        op.execute(f"CREATE INDEX {index}")


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"DROP TABLE {table}")
