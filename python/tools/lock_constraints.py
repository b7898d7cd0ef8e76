"""Print poetry.lock as pip constraints, so `make test` installs exactly the locked versions.

Poetry itself is not needed: the lock is TOML, and each package's environment markers are
kept, so pip picks the right version where the lock holds one per Python version.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def main() -> int:
    lock = tomllib.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    for package in lock["package"]:
        line = f"{package['name']}=={package['version']}"
        markers = package.get("markers")
        if isinstance(markers, str):
            line += f" ; {markers}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
