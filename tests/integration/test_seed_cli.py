"""``bulkhead seed``: synthetic patients written into one partition, end to end through the command line."""

from __future__ import annotations

from collections import Counter

from click.testing import CliRunner
from flask.testing import FlaskClient

from cli.main import main
from cli.serve.credentials import SECRETS_DIR, embedded_database_settings, embedded_postgres
from core.settings import Settings
from harness.services import serve_data_dir
from storage import Database
from tests.support.ports import postgres_login
from tools.synthetic import Population, generate


def _seed(database_url: str, *args: str) -> tuple[int, str]:
    runner = CliRunner()
    result = runner.invoke(main, ["seed", *args], env={"BULKHEAD_DATABASE_URL": database_url})
    return result.exit_code, result.output


def test_seed_writes_every_generated_resource_into_the_partition_and_prints_the_counts(
    database_url: str, database: Database, client: FlaskClient, partition: str
) -> None:
    # Given what the generator yields for 4 patients with seed 3
    expected = Counter(r["resourceType"] for r in generate(4, seed=3))
    # When the command seeds them
    code, output = _seed(database_url, "--partition", partition, "--patients", "4", "--seed", "3")
    # Then it succeeds and prints the count of each type and the total
    assert code == 0, output
    for rtype, count in expected.items():
        assert any(line.split() == [rtype, str(count)] for line in output.splitlines()), (rtype, output)
    assert f"{sum(expected.values())} resources" in output
    # And the partition holds exactly those resources, readable through the API
    listed = {p.name: p.resource_count for p in database.partitions()}
    assert listed[partition] == sum(expected.values())
    patient_id = Population(3, 4).patient_id(2)
    patient = client.get(f"/partitions/{partition}/Patient/{patient_id}")
    assert patient.status_code == 200
    assert patient.get_json(force=True)["meta"]["versionId"] == "1"


def test_seeding_the_same_seed_twice_is_refused_and_another_partition_gets_its_own_copy(
    database_url: str, database: Database, client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given a partition seeded with seed 8
    assert _seed(database_url, "--partition", partition, "--patients", "2", "--seed", "8")[0] == 0
    count = {p.name: p.resource_count for p in database.partitions()}[partition]
    # When the same seed is seeded again into it, and into another partition
    again, message = _seed(database_url, "--partition", partition, "--patients", "2", "--seed", "8")
    other, _ = _seed(database_url, "--partition", other_partition, "--patients", "2", "--seed", "8")
    # Then the repeat is refused with a hint and changes nothing, and the other partition has the same ids
    assert again != 0
    assert "already in partition" in message.lower() and "--seed" in message
    listed = {p.name: p.resource_count for p in database.partitions()}
    assert listed[partition] == count
    assert other == 0
    assert listed[other_partition] == count
    patient_id = Population(8, 2).patient_id(0)
    ours = client.get(f"/partitions/{partition}/Patient/{patient_id}").get_json(force=True)
    theirs = client.get(f"/partitions/{other_partition}/Patient/{patient_id}").get_json(force=True)
    assert ours["name"] == theirs["name"]


def test_seed_refuses_a_reserved_partition_name_without_writing(
    database_url: str, database: Database
) -> None:
    # Given a reserved partition name, When seeding into it
    code, output = _seed(database_url, "--partition", "Admin", "--patients", "1")
    # Then it fails with the reason and no such partition exists
    assert code != 0
    assert "reserved" in output
    assert "Admin" not in {p.name for p in database.partitions()}


def test_seed_with_no_database_and_no_running_server_fills_the_embedded_one_behind_its_kept_passwords(
    partition: str,
) -> None:
    with serve_data_dir() as data_dir:
        # Given a data directory where no server runs, and no database configured
        env = {"BULKHEAD_DATA_DIR": str(data_dir), "BULKHEAD_DATABASE_URL": None}
        # When a partition is seeded
        result = CliRunner().invoke(main, ["seed", "--partition", partition, "--patients", "1"], env=env)
        # Then it succeeds on the embedded PostgreSQL, whose passwords it made and kept
        assert result.exit_code == 0, result.output
        kept = sorted(p.name for p in (data_dir / SECRETS_DIR).iterdir())
        assert kept == ["postgres", "postgres-bulkhead_admin", "postgres-bulkhead_app"]
        # And that server, started again with them, holds the partition for the application role and for
        # nobody without a password
        server = embedded_postgres(data_dir)
        owner_url = server.start()
        try:
            settings = embedded_database_settings(Settings(), data_dir, owner_url)
            assert postgres_login(host="127.0.0.1", port=server.port, user="bulkhead_app") is not None
            app = Database.from_settings(settings)
            try:
                listed = {p.name: p.resource_count for p in app.partitions()}
            finally:
                app.dispose()
            assert listed[partition] == sum(1 for _ in generate(1, seed=0))
        finally:
            server.stop()
