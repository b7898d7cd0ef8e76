"""Session-wide test setup."""

from __future__ import annotations

import asyncio

# pytest-asyncio (1.3, nixpkgs' version) asks for the current event loop before its first
# test; on Python 3.13 that creates an implicit loop which is never closed, and the session
# then fails on its ResourceWarning (filterwarnings = error). Saying "no current loop" up
# front makes that call raise instead, which pytest-asyncio handles.
asyncio.set_event_loop(None)
