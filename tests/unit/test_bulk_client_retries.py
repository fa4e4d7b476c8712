"""The bulk clients never report a failure a retry would have avoided: a connection the server closed as
the client reused it is retried for GET, and the server keeps connections open longer than it asks to wait."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from api.bulk_common import RETRY_AFTER_SECONDS
from cli.clients.http import jittered, retrying_session
from cli.serve.supervisor import KEEP_ALIVE_SECONDS


class _DropsFirst(BaseHTTPRequestHandler):
    """Close the first connection without an answer (as a server closing a kept-alive one), then answer."""

    seen = 0

    def _answer(self) -> None:
        type(self).seen += 1
        if type(self).seen == 1:
            self.close_connection = True
            self.connection.close()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = _answer  # noqa: N815
    do_POST = _answer  # noqa: N815

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def dropping_server() -> Iterator[str]:
    _DropsFirst.seen = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DropsFirst)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_status_poll_whose_connection_was_closed_is_retried_and_succeeds(dropping_server: str) -> None:
    answer = retrying_session().get(f"{dropping_server}/status", timeout=5)
    assert answer.status_code == 200
    assert _DropsFirst.seen == 2


def test_a_kick_off_post_is_not_sent_twice(dropping_server: str) -> None:
    with pytest.raises(requests.ConnectionError):
        retrying_session().post(f"{dropping_server}/$export", timeout=5)
    assert _DropsFirst.seen == 1


def test_the_server_keeps_a_connection_open_longer_than_it_asks_clients_to_wait() -> None:
    assert KEEP_ALIVE_SECONDS > 2 * RETRY_AFTER_SECONDS
    assert all(
        RETRY_AFTER_SECONDS <= jittered(RETRY_AFTER_SECONDS) <= 1.1 * RETRY_AFTER_SECONDS for _ in range(50)
    )
