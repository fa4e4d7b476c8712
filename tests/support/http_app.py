"""Serve a Flask application over real HTTP on 127.0.0.1, for clients that need a URL (the CLI)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from flask import Flask

from api import create_app
from core.settings import Settings
from storage import Database
from storage.objectstore import ObjectStore


def app_for(settings: Settings, database: Database, object_store: ObjectStore) -> Flask:
    """Return the application with the given database and object store, announcing its own address."""
    app = create_app(replace(settings, public_base_url=None), database=database)
    app.extensions["bulkhead.objectstore"] = object_store
    return app


@contextmanager
def served(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 while the block runs; yield its root URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
