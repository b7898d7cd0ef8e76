"""Stand-in `journalctl -u UNIT... [-f] -o cat -n all`: the lines the systemd-run stand-in
recorded for those units; with -f it follows until its caller (or the ssh under it) is gone."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(os.environ["HYDRA_TEST_ROOT"])


def main() -> int:
    args = sys.argv[1:]
    units = {args[i + 1] for i, a in enumerate(args) if a == "-u"}
    follow = "-f" in args
    parent = os.getppid()
    path = ROOT / "journal.log"
    offset = 0
    while True:
        if path.exists():
            with path.open() as log:
                log.seek(offset)
                chunk = log.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode())
            for line in complete.splitlines():
                unit, _, text = line.partition("\t")
                if unit in units:
                    try:
                        print(text, flush=True)
                    except BrokenPipeError:
                        return 0
        if not follow or os.getppid() != parent:
            return 0
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
