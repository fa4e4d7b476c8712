"""The bulk operations' HTTP API with the job machinery run in the test process (real PostgreSQL and S3).

Kick-offs go through the Flask test client; the messages the machinery sends are recorded and delivered by
``run()`` (the orchestrator and worker code, not processes). Tests of worker processes use
``harness/cluster.py`` instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from core.settings import Settings
from orchestrator import service
from orchestrator.registry import load_planner_modules
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.jobinproc import RecordingSender, SentMessage, deliver, make_resources
from workers.registry import load_operation_modules
from workers.resources import WorkerResources

FHIR = "application/fhir+json"
PUBLIC = "http://bulkhead.test"


@dataclass
class BulkApi:
    """A test client of an application whose jobs run when ``run()`` delivers their messages."""

    client: FlaskClient
    resources: WorkerResources
    sender: RecordingSender
    store: S3ObjectStore
    backlog: list[SentMessage] = field(default_factory=list)

    def run(self, partition: str | None = None) -> None:
        """Deliver the machinery's messages (``partition``'s only, when given) until none is left."""
        for _ in range(10_000):
            pending = self.backlog + self.sender.take()
            mine = [m for m in pending if partition is None or m.partition == partition]
            self.backlog = [m for m in pending if m not in mine]
            if not mine:
                return
            for message in mine:
                deliver(self.resources, message)
        raise AssertionError("the machinery kept sending messages")

    def path(self, url: str) -> str:
        """Return the path of an absolute URL this application made."""
        assert url.startswith(PUBLIC), url
        return url[len(PUBLIC) :]

    def poll(self, location: str, **headers: str) -> TestResponse:
        """GET a status URL."""
        return self.client.get(self.path(location), headers=headers)

    def finish(self, location: str) -> TestResponse:
        """Run the job to its end (and the other jobs of its partition) and return the final poll."""
        path = self.path(location)
        partition = path.split("/")[2] if path.startswith("/partitions/") else "default"
        for _ in range(50):
            self.run(partition)
            response = self.poll(location)
            if response.status_code != 202:
                return response
            time.sleep(0.05)
        raise AssertionError(f"{location} still running")

    def post(self, path: str, body: Any, **headers: str) -> TestResponse:
        """POST a FHIR JSON body."""
        return self.client.post(path, json=body, headers={"Content-Type": FHIR, **headers})

    def patch(self, path: str, body: Any) -> TestResponse:
        """PATCH a FHIR JSON body."""
        return self.client.patch(path, json=body, headers={"Content-Type": FHIR})

    def put(self, path: str, body: Any) -> TestResponse:
        """PUT a FHIR JSON body."""
        return self.client.put(path, json=body, headers={"Content-Type": FHIR})


def bulk_api(
    settings: Settings,
    database: Database,
    store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    **overrides: Any,
) -> BulkApi:
    """Build the application and the in-process machinery; route the API's messages to the recorder."""
    load_operation_modules()
    load_planner_modules()
    resources, sender = make_resources(settings, database, store, **overrides)
    monkeypatch.setattr(service, "outbox_for", lambda _settings: sender)
    app = create_app(resources.settings, database=database)
    app.extensions["bulkhead.objectstore"] = store
    return BulkApi(app.test_client(), resources, sender, store)
