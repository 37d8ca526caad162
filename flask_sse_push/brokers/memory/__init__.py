"""The in-process broker: :class:`MemoryBroker`, its per-process state and its channels."""

from __future__ import annotations

from .broker import MemoryBroker

__all__ = ["MemoryBroker"]
