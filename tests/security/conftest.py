"""Fixtures of the security tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.arena import SECRET, Arena, partition_rows, seed_arena_partition


@pytest.fixture
def arena(secure_client, auth_keys, owner_database_url, partition, other_partition) -> Iterator[Arena]:
    """Seed A and B with identical ids; yield them with B's all-powerful token; check A is unchanged after."""
    seed_arena_partition(secure_client, auth_keys, partition, SECRET)
    seed_arena_partition(secure_client, auth_keys, other_partition, "attacker")
    before = partition_rows(owner_database_url, partition)
    yield Arena(partition, other_partition, auth_keys.hs256([other_partition], "system/*.cruds"))
    assert partition_rows(owner_database_url, partition) == before, "partition A changed"
