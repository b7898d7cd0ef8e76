from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

# pytest-asyncio (1.3, nixpkgs' version) asks for the current event loop before its first
# test; on Python 3.13 that creates an implicit loop which is never closed, and the session
# then fails on its ResourceWarning (filterwarnings = error). Saying "no current loop" up
# front makes that call raise instead, which pytest-asyncio handles.
asyncio.set_event_loop(None)


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_systemctl(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A stand-in `systemctl`: `is-active U` prints the state in state/U, `restart U` logs
    argv and sets the state to the contents of state/U.after-restart (default: active)."""
    state = tmp_path / "units"
    state.mkdir()
    log = tmp_path / "systemctl.log"
    script = write_script(
        tmp_path / "systemctl",
        f"""echo "$@" >> {log}
unit="$2"
case "$1" in
  is-active)
    s=$(cat {state}/"$unit" 2>/dev/null || echo inactive); echo "$s"
    [ "$s" = active ] ;;
  restart)
    if [ -f {state}/"$unit".after-restart ]; then cp {state}/"$unit".after-restart {state}/"$unit"
    else echo active > {state}/"$unit"; fi ;;
  *) exit 1 ;;
esac
""",
    )
    return script, state, log
