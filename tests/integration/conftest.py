"""Fixtures of the integration tests that run exports in-process."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from core.settings import Settings
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.exported import Ctx


@pytest.fixture
def ctx_for(settings: Settings, database: Database, object_store: S3ObjectStore) -> Any:
    """Return a maker of export contexts for a partition, with settings overridden as asked."""

    def make(partition: str, **overrides: Any) -> Ctx:
        return Ctx(partition, replace(settings, **overrides), database, object_store)

    return make
