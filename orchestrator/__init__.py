"""orchestrator layer of Bulkhead."""

from __future__ import annotations

__all__: list[str] = []
