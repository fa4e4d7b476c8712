"""Secrets of the embedded servers: one file per name, made once, readable by its owner only."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from cli.embedded.secretfiles import secret_file, write_private
from cli.serve.credentials import SECRETS_DIR, embedded_database_settings
from core.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_is_made_once_in_a_file_and_a_directory_only_its_owner_may_open(tmp_path: Path) -> None:
    # Given no secrets yet
    directory = tmp_path / "secrets"
    # When a secret is asked for twice
    first = secret_file(directory, "redis")
    again = secret_file(directory, "redis")
    # Then it was made once, long and random, and kept in a 0600 file in a 0700 directory
    assert first == again and len(first) >= 32
    assert secret_file(directory, "postgres") != first
    assert (directory / "redis").read_text().strip() == first
    assert _mode(directory / "redis") == 0o600 and _mode(directory) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == ["postgres", "redis"]


def test_a_kept_secret_left_readable_by_others_is_made_private_again(tmp_path: Path) -> None:
    # Given a kept secret whose file (and directory) someone opened up
    directory = tmp_path / "secrets"
    kept = secret_file(directory, "redis")
    (directory / "redis").chmod(0o644)
    directory.chmod(0o755)
    # When it is read again / Then it is the same secret, and private again
    assert secret_file(directory, "redis") == kept
    assert _mode(directory / "redis") == 0o600 and _mode(directory) == 0o700


def test_processes_asking_for_a_new_secret_at_once_all_get_the_same_one(tmp_path: Path) -> None:
    # Given many threads asking for the same new secret at the same moment
    directory = tmp_path / "secrets"
    got: list[str] = []
    start = threading.Barrier(16)

    def ask() -> None:
        start.wait()
        got.append(secret_file(directory, "postgres-bulkhead_app"))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then they all got one and the same, and no scratch file is left behind
    assert len(got) == 16 and len(set(got)) == 1
    assert [p.name for p in directory.iterdir()] == ["postgres-bulkhead_app"]


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "Upper"])
def test_a_secret_name_that_is_not_a_plain_file_name_is_refused(tmp_path: Path, name: str) -> None:
    # Given a name that could point outside the directory or hide there / When asked / Then refused
    with pytest.raises(ValueError, match="invalid secret name"):
        secret_file(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_a_private_file_that_existed_with_another_mode_is_rewritten_private(tmp_path: Path) -> None:
    # Given a file readable by everyone
    path = tmp_path / "serve.json"
    path.write_text("old")
    path.chmod(0o644)
    # When it is written as private / Then it holds the new text and is 0600
    write_private(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o600


def test_the_embedded_database_is_used_as_the_application_role_with_a_kept_or_configured_password(
    tmp_path: Path,
) -> None:
    # Given an embedded server's owner URL and no configured application password
    owner = "postgresql://postgres:owner-pw@127.0.0.1:5999/postgres"
    # When the settings are completed for it
    settings = embedded_database_settings(Settings(), tmp_path, owner)
    # Then migrations run as the owner, everything else as the application role with a kept password
    kept = (tmp_path / SECRETS_DIR / "postgres-bulkhead_app").read_text().strip()
    assert settings.migration_database_url == owner
    assert settings.database_url == f"postgresql://bulkhead_app:{kept}@127.0.0.1:5999/postgres"
    assert settings.database_app_password == kept
    # And a configured password wins over the kept one
    configured = embedded_database_settings(Settings(database_app_password="mine"), tmp_path, owner)
    assert configured.database_url == "postgresql://bulkhead_app:mine@127.0.0.1:5999/postgres"
