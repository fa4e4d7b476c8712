"""The release window's choice, without I/O: bounded per job and per partition, fair across partitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage.jobs import GroupLoad, choose_releases

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def load(partition: str, group: str, *, in_flight: int = 0, waiting: int = 0, age: int = 0) -> GroupLoad:
    """Return a group's load; a larger ``age`` means an older group."""
    return GroupLoad(partition, group, 0, T0 - timedelta(seconds=age), in_flight, waiting)


def test_a_huge_job_is_released_only_up_to_its_windows() -> None:
    # Given one group with a thousand waiting jobs
    loads = [load("a", "huge", waiting=1000)]
    # When slots are chosen with a window of 4 per job and 8 per partition
    picks = choose_releases(loads, per_job=4, per_partition=8)
    # Then only 4 go
    assert picks == {"huge": 4}


def test_a_small_job_of_another_partition_gets_slots_while_a_huge_one_is_in_flight() -> None:
    # Given a partition whose huge job fills its window, and a newer small job in another partition
    loads = [load("a", "huge", in_flight=8, waiting=992, age=60), load("b", "small", waiting=3)]
    # When slots are chosen
    picks = choose_releases(loads, per_job=8, per_partition=8)
    # Then the small job's work is released at once and the huge one gets nothing more
    assert picks == {"small": 3}


def test_free_slots_go_round_robin_to_the_partitions_with_fewest_in_flight() -> None:
    # Given three partitions with different loads and plenty of waiting work
    loads = [
        load("a", "ga", in_flight=3, waiting=100, age=30),
        load("b", "gb", in_flight=1, waiting=100, age=20),
        load("c", "gc", in_flight=0, waiting=100, age=10),
    ]
    # When slots are chosen with 4 per partition
    picks = choose_releases(loads, per_job=4, per_partition=4)
    # Then every partition is filled up to its window, the emptiest getting the most
    assert picks == {"ga": 1, "gb": 3, "gc": 4}


def test_within_a_partition_the_group_with_fewer_in_flight_goes_first() -> None:
    # Given two groups of one partition, the older one already busy
    loads = [load("a", "old", in_flight=2, waiting=10, age=60), load("a", "new", waiting=10)]
    # When two slots are free in the partition
    picks = choose_releases(loads, per_job=4, per_partition=4)
    # Then both go to the idle group
    assert picks == {"new": 2}


def test_nothing_is_released_when_nothing_waits_or_every_window_is_full() -> None:
    # Given a partition at its window and a group with nothing waiting
    loads = [load("a", "busy", in_flight=2, waiting=5), load("b", "done", in_flight=1, waiting=0)]
    # When slots are chosen
    # Then none is
    assert choose_releases(loads, per_job=2, per_partition=2) == {}
