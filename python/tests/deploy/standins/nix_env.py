"""Stand-in `nix-env -p PROFILE (--set PATH | --switch-generation N | --rollback)`: the
profile is a symlink to PROFILE-N-link, as Nix keeps it. Exit code from codes/nix-env."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(os.environ["HYDRA_TEST_ROOT"])


def generations(profile: Path) -> dict[int, Path]:
    found = {}
    for entry in profile.parent.iterdir():
        m = re.fullmatch(re.escape(profile.name) + r"-(\d+)-link", entry.name)
        if m:
            found[int(m.group(1))] = entry
    return found


def point(profile: Path, n: int) -> None:
    tmp = profile.with_name(profile.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(f"{profile.name}-{n}-link")
    tmp.replace(profile)


def main() -> int:
    args = sys.argv[1:]
    with (ROOT / "calls.log").open("a") as log:
        log.write("nix-env " + " ".join(args) + "\n")
    code_file = ROOT / "codes" / "nix-env"
    if code_file.exists():
        return int(code_file.read_text())
    profile = Path(args[args.index("-p") + 1])
    gens = generations(profile)
    match = re.search(r"-(\d+)-link$", os.readlink(profile))
    assert match is not None
    current = int(match.group(1))
    if "--set" in args:
        n = max(gens) + 1
        (profile.parent / f"{profile.name}-{n}-link").symlink_to(args[args.index("--set") + 1])
        point(profile, n)
    elif "--switch-generation" in args:
        n = int(args[args.index("--switch-generation") + 1])
        if n not in gens:
            print(f"error: generation {n} does not exist", file=sys.stderr)
            return 1
        point(profile, n)
    elif "--rollback" in args:
        older = [n for n in gens if n < current]
        if not older:
            return 1
        point(profile, max(older))
    return 0


if __name__ == "__main__":
    sys.exit(main())
