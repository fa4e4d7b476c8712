"""A tiny HTTP file server on 127.0.0.1 for import tests: serves bytes by path, honours Range and ETag."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Files held in memory, served at ``base_url + path``."""

    def __init__(self, server: ThreadingHTTPServer):
        self.server = server
        self.files: dict[str, bytes] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.ranges = True
        self.requests: list[tuple[str, str, str | None]] = []
        self.redirects: dict[str, str] = {}
        self.authorizations: list[str | None] = []

    @property
    def base_url(self) -> str:
        """Return the server's root URL."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def put(self, path: str, data: bytes, **headers: str) -> str:
        """Serve ``data`` at ``path``; return its URL."""
        self.files[path] = data
        self.headers[path] = headers
        return self.base_url + path

    def redirect(self, path: str, location: str) -> str:
        """Answer ``path`` with a 302 to ``location``; return its URL."""
        self.redirects[path] = location
        return self.base_url + path

    def etag(self, path: str) -> str:
        """Return the entity tag the server sends for ``path``."""
        return hashlib.md5(self.files[path]).hexdigest()


def _handler(files: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """Stay quiet."""

        def _send(self, body: bool) -> None:
            files.requests.append((self.command, self.path, self.headers.get("Range")))
            files.authorizations.append(self.headers.get("Authorization"))
            path = self.path.split("?", 1)[0]  # files are found by path; a query string is sent along
            location = files.redirects.get(path)
            if location is not None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = files.files.get(path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            etag = files.etag(path)
            wanted = self.headers.get("If-Match")
            if wanted and wanted.strip('"') != etag:
                self.send_response(412)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, status = 0, 200
            header = self.headers.get("Range")
            if files.ranges and header and header.startswith("bytes="):
                first, _, last = header[6:].partition("-")
                start = int(first)
                stop = int(last) + 1 if last else len(data)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                chunk, status = data[start:stop], 206
            else:
                chunk = data
            self.send_response(status)
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Accept-Ranges", "bytes" if files.ranges else "none")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{start + len(chunk) - 1}/{len(data)}")
            for name, value in files.headers.get(path, {}).items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            if body:
                self.wfile.write(chunk)

        def do_GET(self) -> None:
            """Serve a file or a range of it."""
            self._send(True)

        def do_HEAD(self) -> None:
            """Describe a file."""
            self._send(False)

    return Handler


@contextmanager
def file_server() -> Iterator[FileServer]:
    """Start a file server bound to 127.0.0.1 on a free port; stop it afterwards."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    files = FileServer(server)
    server.RequestHandlerClass = _handler(files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
