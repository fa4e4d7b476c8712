"""Exported lines are the stored bytes: escapes, quotes, unicode and raw control characters.

Each test plans, processes and finishes an export in-process against real PostgreSQL and S3
(``tests/support/exported.py``) and reads the objects back.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from flask.testing import FlaskClient

from storage.db import libpq_url
from tests.support.exported import run_export
from tests.support.fhir import base, put


def test_exported_lines_keep_backslashes_quotes_escapes_and_unicode_byte_for_byte(
    client: FlaskClient, partition: str, ctx_for: Any
) -> None:
    # Given resources whose JSON holds everything an escaping COPY format would have to rewrite
    texts = [
        '<div xmlns="http://www.w3.org/1999/xhtml">a "quoted" word</div>',
        "C:\\path\\to\\file and \\\\server\\share",
        "line one\nline two\ttabbed\r\n",
        "ünïcödé — 漢字 — 🩺 and a control \u0001 char",
    ]
    stored = []
    for n, text in enumerate(texts):
        put(
            client,
            f"{base(partition)}/Patient/p{n}",
            {
                "resourceType": "Patient",
                "id": f"p{n}",
                "text": {"status": "generated", "div": texts[0]},
                "name": [{"text": text}],
            },
        )
        stored.append(client.get(f"{base(partition)}/Patient/p{n}").data)
    # When the partition is exported
    _, lines = run_export(ctx_for(partition))
    # Then every line is the stored JSON, byte for byte
    assert sorted(lines["Patient"]) == sorted(stored)
    assert [orjson.loads(x)["name"][0]["text"] for x in sorted(lines["Patient"])] == texts


def test_stored_json_with_a_raw_control_character_or_newline_still_exports_as_one_line(
    client: FlaskClient, partition: str, ctx_for: Any, owner_database_url: str
) -> None:
    # Given two stored resources whose text holds a raw U+0001 and a raw newline (as a trusted import of
    # JSON that was not valid could store them), next to an ordinary one
    for rid in ("raw1", "raw2", "plain"):
        put(client, f"{base(partition)}/Patient/{rid}", {"resourceType": "Patient", "id": rid})
    raws = {
        "raw1": '{"resourceType":"Patient","id":"raw1","name":[{"text":"a\u0001b\u0001\u0001c"}]}',
        "raw2": '{"resourceType":"Patient","id":"raw2",\n"name":[{"text":"x"}]}',
    }
    with psycopg.connect(libpq_url(owner_database_url), autocommit=True) as conn:
        for rid, raw in raws.items():
            conn.execute(
                "UPDATE resource SET raw = %s FROM partition p WHERE p.id = resource.partition_id "
                "AND p.name = %s AND resource.resource_id = %s AND NOT resource.is_history",
                (raw, partition, rid),
            )
    # When the partition is exported
    _, lines = run_export(ctx_for(partition))
    # Then each resource is one line: the control characters kept, the newline written as a space
    by_id = {rid: x for x in lines["Patient"] for rid in raws if f'"id":"{rid}"'.encode() in x}
    assert len(lines["Patient"]) == 3 and sorted(by_id) == ["raw1", "raw2"]
    assert by_id["raw1"] == raws["raw1"].encode()
    assert by_id["raw2"] == raws["raw2"].replace("\n", " ").encode()
