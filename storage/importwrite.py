"""Merge import records into one partition's resource table, a batch per call.

Each batch: read the stored versions of the batch's resources (locking them), decide per record with
``core.importrows.decide``, then write. A batch of resources none of which exists yet (a first load) goes
through the bulk writer (``storage.bulkwrite.copy_new_resources``). Otherwise, or when that meets a resource
another worker stored meanwhile, new versions are copied into a temporary table and moved with one ``INSERT …
SELECT … ON CONFLICT DO NOTHING`` (row-level security refuses ``COPY`` into ``resource`` itself): the records
that lost a race are decided again against what the winner stored. The caller's unit of work commits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.errors import Conflict
from core.importrows import Decision, Existing, ImportRecord, decide
from core.importspec import INITIAL
from storage.bulkwrite import NewResource, copy_new_resources
from storage.search.index import IndexRows, index_rows_for, unindex_resources
from storage.search.registry import registry_for
from storage.search.tables import INDEX_TABLES
from storage.staging import ensure_stages, insert_rows
from storage.uow import UnitOfWork

log = logging.getLogger(__name__)

_MAX_ROUNDS = 5
_STAGE = "import_stage"
_COLUMNS = "partition_id, resource_type, resource_id, version, last_updated, is_deleted, is_history, raw"


@dataclass(frozen=True)
class Written:
    """What a batch did to one record: ``created``, ``updated``, ``unchanged`` or ``error`` (and why)."""

    record: ImportRecord
    outcome: str
    reason: str = ""


def _driver(session: Session) -> Any:
    conn = session.connection().connection.driver_connection
    assert conn is not None
    return conn


class ImportWriter:
    """Write import records into one partition (the unit of work's), with the import's fixed parameters.

    ``watermark`` is the largest surrogate id stored before the import began: rows above it were written
    during the import. ``index`` false leaves search indexing to a later reindex (trusted loads).
    """

    def __init__(self, uow: UnitOfWork, *, mode: str, watermark: int, job_time: datetime, index: bool = True):
        self.uow = uow
        self.mode = mode
        self.watermark = watermark
        self.job_time = job_time
        self.index = index
        self._pid: int | None = None
        self._staged = False

    @property
    def partition_id(self) -> int:
        """Return the partition's id, creating the partition on the first write."""
        if self._pid is None:
            pid = self.uow.resources.partition_id(create=True)
            assert pid is not None
            self._pid = pid
        return self._pid

    def write(self, records: Sequence[ImportRecord]) -> list[Written]:
        """Store a batch of records in the current transaction; return the outcome of each."""
        if not records:
            return []
        fresh = self._write_fresh(records)
        if fresh is not None:
            return fresh
        outcomes: dict[int, Written] = {}
        todo = list(enumerate(records))
        for _round in range(_MAX_ROUNDS):
            lost = self._round(todo, outcomes)
            if not lost:
                break
            todo = lost
        else:
            for i, rec in todo:
                outcomes[i] = Written(rec, "error", "concurrent writes kept conflicting; retry the import")
        return [outcomes[i] for i in range(len(records))]

    def _write_fresh(self, records: Sequence[ImportRecord]) -> list[Written] | None:
        """Write a batch as new resources without looking anything up; None (nothing written) if it is not.

        A first load meets no stored version: deciding against nothing, every record creates version 1 of
        its resource (or loses to a higher-ranked line of the batch), and the bulk writer refuses the batch
        if one of them exists after all, in which case the full path decides again.
        """
        state: dict[tuple[str, str], list[Existing]] = {}
        inserts: list[tuple[int, ImportRecord, Decision]] = []
        kinds: list[str] = []
        for i, rec in enumerate(records):
            if rec.version not in (None, 1) and self.mode != INITIAL:
                return None
            rows = state.setdefault((rec.resource_type, rec.resource_id), [])
            d = decide(rec, rows, mode=self.mode, job_time=self.job_time, load=lambda r: r.raw)
            if d.kind == "insert" and d.version == 1 and d.current:
                inserts.append((i, rec, d))
            elif d.kind != "unchanged":
                return None
            kinds.append(d.kind)
        if not inserts or not self._copy_new(inserts):
            return None
        return [
            Written(rec, "created" if kind == "insert" else "unchanged")
            for rec, kind in zip(records, kinds, strict=True)
        ]

    def _existing(self, records: Sequence[tuple[int, ImportRecord]]) -> dict[tuple[str, str], list[Existing]]:
        keys = sorted({(r.resource_type, r.resource_id) for _, r in records})
        rows = self.uow.session.execute(
            text(
                """
                SELECT r.resource_type, r.resource_id, r.version, r.last_updated, r.is_history, r.is_deleted,
                       r.surrogate_id, r.raw
                FROM resource r
                JOIN unnest(CAST(:types AS text[]), CAST(:ids AS text[])) AS k(t, i)
                  ON r.resource_type = k.t AND r.resource_id = k.i
                WHERE r.partition_id = :pid
                ORDER BY r.surrogate_id
                FOR UPDATE OF r
                """
            ),
            {"pid": self.partition_id, "types": [k[0] for k in keys], "ids": [k[1] for k in keys]},
        ).all()
        found: dict[tuple[str, str], list[Existing]] = {}
        for row in rows:
            found.setdefault((row[0], row[1]), []).append(
                Existing(
                    version=row[2],
                    last_updated=row[3],
                    is_history=row[4],
                    is_deleted=row[5],
                    pre=row[6] <= self.watermark,
                    surrogate_id=row[6],
                    raw=row[7].encode("utf-8") if row[7] is not None else None,
                )
            )
        return found

    def _round(
        self, todo: list[tuple[int, ImportRecord]], outcomes: dict[int, Written]
    ) -> list[tuple[int, ImportRecord]]:
        state = self._existing(todo)
        state_existed = bool(state)
        inserts: list[tuple[int, ImportRecord, Decision]] = []
        replaces: list[tuple[ImportRecord, Decision]] = []
        demote: list[int] = []
        for i, rec in todo:
            rows = state.setdefault((rec.resource_type, rec.resource_id), [])
            d = decide(rec, rows, mode=self.mode, job_time=self.job_time, load=lambda r: r.raw)
            if d.kind == "error":
                outcomes[i] = Written(rec, "error", d.reason)
            elif d.kind == "unchanged":
                outcomes[i] = Written(rec, "unchanged")
            elif d.kind == "replace":
                replaces.append((rec, d))
                outcomes[i] = Written(rec, "updated")
            else:
                inserts.append((i, rec, d))
                outcomes[i] = Written(rec, "created" if d.version == 1 or d.demote is None else "updated")
                if d.demote is not None and d.demote.surrogate_id is not None:
                    demote.append(d.demote.surrogate_id)
        session = self.uow.session
        if demote:
            session.execute(
                text(
                    "UPDATE resource SET is_history = true WHERE surrogate_id = ANY(:sids) AND NOT is_history"
                ),
                {"sids": demote},
            )
        index_rows = IndexRows()
        unindex: list[int] = list(demote)
        registry = registry_for(session, self.partition_id) if self.index else None
        for rec, d in replaces:
            assert d.target is not None and d.target.surrogate_id is not None
            session.execute(
                text(
                    "UPDATE resource SET raw = :raw, last_updated = :lu, is_deleted = false"
                    " WHERE surrogate_id = :sid"
                ),
                {"raw": d.raw.decode("utf-8"), "lu": d.last_updated, "sid": d.target.surrogate_id},
            )
            if d.current and registry is not None:
                unindex.append(d.target.surrogate_id)
                index_rows_for(
                    rec.resource_type,
                    d.target.surrogate_id,
                    self.partition_id,
                    orjson.loads(d.raw),
                    registry=registry,
                    into=index_rows,
                )
        lost: list[tuple[int, ImportRecord]] = []
        inserted: dict[int, int] = {}
        fresh = inserts and not state_existed and all(d.version == 1 and d.current for _i, _r, d in inserts)
        inserts_done = bool(fresh) and self._copy_new(inserts)
        if inserts and not inserts_done:
            inserted, lost_idx = self._insert_staged(inserts)
            lost = [(i, rec) for i, rec, _d in inserts if i in lost_idx]
            for i, _rec in lost:
                outcomes.pop(i, None)
        if self.index and unindex:
            unindex_resources(session, unindex)
        if registry is not None and not inserts_done:
            for i, rec, d in inserts:
                sid = inserted.get(i)
                if sid is not None and d.current:
                    index_rows_for(
                        rec.resource_type,
                        sid,
                        self.partition_id,
                        _indexable(rec, d),
                        registry=registry,
                        into=index_rows,
                    )
        if registry is not None:
            write_index(session, index_rows)
        return lost

    def _rows(self, inserts: list[tuple[int, ImportRecord, Decision]]) -> list[tuple[Any, ...]]:
        pid = self.partition_id
        return [
            (
                pid,
                rec.resource_type,
                rec.resource_id,
                d.version,
                d.last_updated,
                False,
                not d.current,
                d.raw.decode("utf-8"),
            )
            for _i, rec, d in inserts
        ]

    def _copy_new(self, inserts: list[tuple[int, ImportRecord, Decision]]) -> bool:
        """Create a batch of new resources with the bulk writer; False (nothing written) if one exists now."""
        batch = [
            NewResource(
                rec.resource_type,
                rec.resource_id,
                d.raw,
                _indexable(rec, d) if self.index else rec.resource,
                d.last_updated or self.job_time,
            )
            for _i, rec, d in inserts
        ]
        try:
            copy_new_resources(self.uow, batch, index=self.index)
        except Conflict:
            log.info("import batch met a concurrent writer in %s; merging row by row", self.uow.partition)
            return False
        return True

    def _insert_staged(
        self, inserts: list[tuple[int, ImportRecord, Decision]]
    ) -> tuple[dict[int, int], set[int]]:
        """Insert through a temporary table; return {record index: surrogate id} and the indexes that lost."""
        conn = _driver(self.uow.session)
        with conn.cursor() as cur:
            if not self._staged:
                cur.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (n int, partition_id int, resource_type text,"
                    " resource_id text, version int, last_updated timestamptz, is_deleted boolean,"
                    " is_history boolean, raw text) ON COMMIT DELETE ROWS"
                )
                self._staged = True
            cur.execute(f"DELETE FROM {_STAGE}")
            with cur.copy(f"COPY {_STAGE} (n, {_COLUMNS}) FROM STDIN") as copy:
                for (i, _rec, _d), row in zip(inserts, self._rows(inserts), strict=True):
                    copy.write_row((i, *row))
            cur.execute(
                f"""
                WITH ins AS (
                    INSERT INTO resource ({_COLUMNS})
                    SELECT {_COLUMNS} FROM {_STAGE} ORDER BY n
                    ON CONFLICT DO NOTHING
                    RETURNING surrogate_id, resource_type, resource_id, version
                )
                SELECT s.n, ins.surrogate_id FROM ins
                JOIN {_STAGE} s ON s.resource_type = ins.resource_type AND s.resource_id = ins.resource_id
                 AND s.version = ins.version
                """
            )
            done = {int(n): int(sid) for n, sid in cur.fetchall()}
        lost = {i for i, _rec, _d in inserts if i not in done}
        return done, lost


def write_index(session: Session, rows: IndexRows) -> None:
    """Write index rows through staging tables (COPY into the side tables is refused under row security)."""
    present = {kind: batch for kind, batch in rows.by_table.items() if batch}
    if not present:
        return
    with _driver(session).cursor() as cur:
        ensure_stages(cur, [INDEX_TABLES[kind].name for kind in present])
        for kind, batch in present.items():
            table = INDEX_TABLES[kind]
            insert_rows(cur, table.name, [c.name for c in table.columns], batch)


def _indexable(rec: ImportRecord, d: Decision) -> dict[str, Any]:
    meta = dict(rec.resource.get("meta") or {})
    meta["versionId"] = str(d.version)
    if "lastUpdated" not in meta and d.last_updated is not None:
        meta["lastUpdated"] = d.last_updated.isoformat()
    return {**rec.resource, "meta": meta}


def import_watermark(uow: UnitOfWork) -> int:
    """Return a surrogate id at or above every one stored so far: the line between before and during."""
    value = uow.session.execute(
        text("SELECT last_value FROM pg_sequences WHERE sequencename = 'resource_surrogate_id_seq'")
    ).scalar()
    return int(value or 0)
