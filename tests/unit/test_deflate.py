"""Gzip streams written by core.deflate are standard gzip, whichever engine wrote them."""

from __future__ import annotations

import gzip
import os
import platform

import orjson

from core import deflate

NDJSON = b"".join(
    orjson.dumps({"resourceType": "Observation", "id": f"o{i}", "valueQuantity": {"value": i / 7}}) + b"\n"
    for i in range(20_000)
)


def test_a_compressed_stream_is_read_back_by_the_standard_gzip_module_and_is_much_smaller() -> None:
    # Given NDJSON cut into uneven chunks
    chunks = [NDJSON[i : i + 65_537] for i in range(0, len(NDJSON), 65_537)]
    # When it is compressed chunk by chunk
    packed = b"".join(deflate.gzip_chunks(chunks))
    # Then gzip reads it back byte for byte, and it is several times smaller
    assert gzip.decompress(packed) == NDJSON
    assert len(packed) * 5 < len(NDJSON)


def test_gunzip_chunks_reads_what_gzip_chunks_wrote_even_split_at_every_byte_boundary() -> None:
    # Given a gzip stream of random bytes (incompressible), split into odd pieces
    data = os.urandom(300_000)
    packed = b"".join(deflate.gzip_chunks([data]))
    pieces = [packed[i : i + 997] for i in range(0, len(packed), 997)]
    # When it is decompressed piece by piece
    # Then the bytes come back unchanged
    assert b"".join(deflate.gunzip_chunks(pieces)) == data


def test_isal_is_the_engine_on_the_machines_the_dependency_installs_it_on() -> None:
    # Given this machine (the project depends on ISA-L's wheel on x86_64 and aarch64)
    expected = "isal" if platform.machine() in {"x86_64", "aarch64"} else "zlib"
    # When a compressor is made
    packer = deflate.gzip_compressor()
    # Then it is that engine's
    assert type(packer).__module__.startswith(expected)
