"""NDJSON written to a numbered series of objects, starting the next object at a size limit."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from storage.objectstore.base import NDJSON, ObjectStore, ObjectWriter, WrittenFile

_NEWLINE = b"\n"


class RollingNdjsonWriter:
    """Write NDJSON lines to ``key_for(first)``, ``key_for(first + 1)``, … rolling over at ``max_bytes``.

    Keys depend only on the file number, so a retry that writes the same lines overwrites the same objects
    and never adds to them. A single line longer than ``max_bytes`` gets an object of its own.
    """

    def __init__(
        self,
        store: ObjectStore,
        key_for: Callable[[int], str],
        *,
        max_bytes: int,
        first: int = 1,
        content_type: str = NDJSON,
    ):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.store = store
        self.key_for = key_for
        self.max_bytes = max_bytes
        self.content_type = content_type
        self.files: list[WrittenFile] = []
        self._next = first
        self._writer: ObjectWriter | None = None
        self._index = first
        self._lines = 0
        self._closed = False

    @property
    def lines(self) -> int:
        """Return the number of lines written so far, over every file."""
        return sum(f.lines for f in self.files) + self._lines

    def __enter__(self) -> RollingNdjsonWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _writer_for(self, size: int) -> ObjectWriter:
        writer = self._writer
        if writer is not None and writer.size > 0 and writer.size + size > self.max_bytes:
            self._finish_current()
            writer = None
        if writer is None:
            if self._closed:
                raise ValueError("write to a closed NDJSON writer")
            self._index = self._next
            self._next += 1
            writer = self._writer = self.store.open_writer(
                self.key_for(self._index), content_type=self.content_type
            )
        return writer

    def write_line(self, line: bytes) -> None:
        """Append one JSON document (without its newline: the writer adds it)."""
        if not line or _NEWLINE in line:
            raise ValueError("an NDJSON line must be non-empty and hold no newline")
        writer = self._writer
        if writer is None or writer.size + len(line) + 1 > self.max_bytes:
            writer = self._writer_for(len(line) + 1)
        writer.write(line)
        writer.write(_NEWLINE)
        self._lines += 1

    def write_lines(self, lines: Iterable[bytes]) -> None:
        """Append each of ``lines`` (JSON documents without newlines)."""
        for line in lines:
            self.write_line(line)

    def write_block(self, block: bytes | bytearray | memoryview) -> None:
        """Append complete lines at once: ``block`` holds one or more documents, each ending in a newline.

        The block is not split: the writer rolls over before it when it would not fit.
        """
        view = memoryview(block).cast("B")
        if not view:
            return
        if view[-1] != _NEWLINE[0]:
            raise ValueError("an NDJSON block must end with a newline")
        count = block.count(_NEWLINE) if isinstance(block, bytes | bytearray) else bytes(view).count(_NEWLINE)
        self._writer_for(len(view)).write(view)
        self._lines += count

    def _finish_current(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        info = writer.close()
        self.files.append(WrittenFile(info.key, self._index, self._lines, info.size, info.etag))
        self._lines = 0

    def close(self) -> list[WrittenFile]:
        """Finish the last object; return every object written, in order (none if no line came)."""
        if not self._closed:
            self._finish_current()
            self._closed = True
        return list(self.files)

    def abort(self) -> None:
        """Abandon the object being written; objects already finished stay (a retry overwrites them)."""
        writer, self._writer = self._writer, None
        self._closed = True
        self._lines = 0
        if writer is not None:
            writer.abort()
