"""Start and stop every process of a single-node Bulkhead (``bulkhead serve``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import replace

from core.settings import Settings
from storage import Database
from storage.embedded import EmbeddedPostgres
from storage.security import role_url

log = logging.getLogger("bulkhead.serve")


class Supervisor:
    """Own the embedded services and child processes of ``bulkhead serve``; stop them all on exit."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.postgres: EmbeddedPostgres | None = None
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Start the embedded services that are not configured, migrate, then the API server."""
        settings = self.settings
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        if not settings.database_url:
            # Embedded: migrate as the owner, then run every process as the restricted application role.
            self.postgres = EmbeddedPostgres(data_dir / "postgres")
            owner_url = self.postgres.start()
            app_url = role_url(owner_url, settings.database_app_role, settings.database_app_password)
            settings = replace(settings, database_url=app_url, migration_database_url=owner_url)
        assert settings.database_url is not None
        db = Database(settings.migration_database_url or settings.database_url)
        db.migrate(app_role=settings.database_app_role, app_password=settings.database_app_password)
        db.dispose()
        self.settings = settings
        env = {**os.environ, "BULKHEAD_DATABASE_URL": settings.database_url}
        gunicorn = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{settings.host}:{settings.port}",
            "--workers",
            str(settings.api_workers),
            "--threads",
            "4",
            "--worker-class",
            "gthread",
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "10",
            "api.wsgi:app()",
        ]
        self.children.append(subprocess.Popen(gunicorn, env=env))
        log.info("Bulkhead API on http://%s:%s (authentication is off)", settings.host, settings.port)

    def wait(self) -> None:
        """Block until a child process exits."""
        while all(child.poll() is None for child in self.children):
            time.sleep(0.5)
        log.error("a child process exited; stopping")

    def stop(self) -> None:
        """Stop children, then the embedded services."""
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        self.children.clear()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
