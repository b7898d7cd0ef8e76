"""Fuzz the configs and flags of all three services through their installed commands.

Each valid base config is mutated at a random place (seeded, so a failure reproduces):

- *hostile* values no field may hold (NaN, Infinity, 1e308, integers beyond 2^53, a
  5000-digit integer, NUL bytes, nesting deeper than any config) must each be exit 78
  with one error line: anything else is a silently accepted value or a wrong exit code;
- *noise* values (empty strings, negatives, wrong types, long strings, Unicode digits)
  may be accepted (0) or refused (78), always with at most one error line;
- hostile files (a FIFO, a device, an oversize file, broken UTF-8) and `--listen` values
  must be exit 78, without hanging.

No case may print a traceback or hang. The cases run in one interpreter per command (the
command's console-script entry point, loaded as `tests/installed.py` does), each under an
alarm; a few run as separate processes through `command_argv` too.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.installed import command_argv
from tests.net import free_port

SEED = 12
MUTATIONS = 420  # hostile mutations per command, plus as many noise ones

RUNNER = r"""
import contextlib, io, json, signal, sys
from importlib.metadata import entry_points

(ep,) = entry_points(group="console_scripts", name=sys.argv[1])
main = ep.load()

class Hang(BaseException):
    pass

def alarm(signum, frame):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
results = []
for argv in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    outcome = {"argv": argv}
    sys.argv = [sys.argv[1], *argv]
    signal.alarm(10)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            outcome["rc"] = main()
    except Hang:
        outcome["rc"] = "hang"
    except SystemExit as exit:
        outcome["rc"] = exit.code
    except BaseException as exc:
        outcome["rc"] = "traceback"
        err.write(f"Traceback: {type(exc).__name__}: {exc}"[:2000])
    finally:
        signal.alarm(0)
    outcome["stderr"] = err.getvalue()[-5000:]
    results.append(outcome)
print(json.dumps(results))
"""

EXPORTER = {
    "listenAddress": "127.0.0.1",
    "port": 9445,
    "backends": ["synthetic"],
    "expectedDevices": {"synthetic": 1},
    "synthetic": {
        "devices": [
            {
                "name": "demo",
                "memoryBytes": 1024,
                "processes": [{"pid": 1, "comm": "x", "memoryBytes": 1}],
            }
        ]
    },
}
LAUNCHER = {
    "engine": "command",
    "name": "demo",
    "command": ["true", "--flag"],
    "port": 8000,
    "gpus": [],
    "environment": {"A": "b"},
    "settings": {"k": "v", "n": 1},
    "headroom": 0.2,
    "readiness": {"timeout": 60, "interval": 0.5, "stopTimeout": 10},
}
HEALTH = {
    "listenAddress": "127.0.0.1",
    "port": 9446,
    "hostName": "h",
    "checks": {
        "tcp": {"type": "tcp", "host": "127.0.0.1", "port": 80, "interval": 15, "timeout": 5},
        "web": {
            "type": "http",
            "url": "http://127.0.0.1:1/health",
            "method": "POST",
            "jsonBody": {"prompt": "x", "max_tokens": 1},
            "remediate": {"action": "command", "command": ["true"], "timeout": 30},
            "dependsOn": ["tcp"],
        },
    },
    "budget": {"maxPerHour": 3, "window": 3600, "backoffBase": 30, "backoffMax": 900},
    "alerts": {
        "retryBase": 1,
        "retryMax": 300,
        "sinks": {"webhook": {"url": "http://127.0.0.1:9/hook"}},
    },
}

# raw JSON text: json.dumps cannot write NaN as the file would hold it, nor 5000 digits fast
HOSTILE = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e308",
    "-1e308",
    "1e999",
    str(2**64),
    "9" * 5000,
    json.dumps("nul\u0000byte"),
    json.dumps(["ok", "nul\u0000"]),
    json.dumps({"k\u0000": 1}),
    "[" * 40 + "]" * 40,
]
NOISE = [
    '""',
    '" "',
    "-1",
    "0",
    "0.0",
    "[]",
    "{}",
    "true",
    "null",
    json.dumps("\u0663\u0664\u0665\u0666"),
    json.dumps("x" * 100_000),
    json.dumps("nas..lan"),
    json.dumps("http://nas..lan/"),
    "123456789012345",
    "-0.0000001",
]

COMMANDS: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    # hydra-gpu-exporter has no validate-only mode here: an accepted config would serve (on
    # a free port), and the alarm would flag it. Only hostile mutations run through it.
    "hydra-gpu-exporter": (EXPORTER, [], []),
    "hydra-launch": (LAUNCHER, ["check"], []),
    "hydra-health": (HEALTH, ["check", "--static"], []),
}

PLACEHOLDER = "__FUZZ__"


def leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place a value could be replaced: each dict value and list item, nested."""
    found = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, value in items:
        found.append((*path, key))
        found.extend(leaves(value, (*path, key)))
    return found


def mutate(base: dict[str, Any], path: tuple[Any, ...], raw: str) -> str:
    data = copy.deepcopy(base)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = PLACEHOLDER
    return json.dumps(data).replace(json.dumps(PLACEHOLDER), raw, 1)


def run_cases(command: str, cases: list[list[str]]) -> list[dict[str, Any]]:
    assert command_argv(command)  # the console script is declared
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, command],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes: list[dict[str, Any]] = json.loads(result.stdout.splitlines()[-1])
    return outcomes


def error_lines(outcome: dict[str, Any]) -> list[str]:
    return [line for line in outcome["stderr"].splitlines() if line.strip()]


def problems(outcome: dict[str, Any], *, must_refuse: bool) -> str | None:
    rc = outcome["rc"]
    lines = error_lines(outcome)
    if rc in ("hang", "traceback") or "Traceback" in outcome["stderr"]:
        return f"{rc}: {outcome['stderr'][-300:]}"
    if must_refuse and rc != 78:
        return f"exit {rc}, expected 78 (silently accepted or wrong code)"
    if rc not in (0, 78):
        return f"exit {rc}, expected 0 or 78"
    if rc == 78 and len(lines) != 1:
        return f"{len(lines)} error lines, expected one"
    if lines and max(len(line) for line in lines) > 1000:
        return "an error line longer than 1000 characters (a value echoed back)"
    return None


@pytest.mark.parametrize("command", list(COMMANDS))
def test_fuzzed_configs_are_accepted_or_refused_in_one_line(command: str, tmp_path: Path) -> None:
    base, subcommand, extra = COMMANDS[command]
    base = {**base, "port": free_port()}
    rng = random.Random(f"{SEED}:{command}")  # noqa: S311 - reproducible cases, not secrets
    places = leaves(base)
    cases: list[list[str]] = []
    refuse: list[bool] = []
    kinds = [(True, value) for value in HOSTILE]
    if command != "hydra-gpu-exporter":
        kinds += [(False, value) for value in NOISE]
    for i in range(MUTATIONS * (2 if command != "hydra-gpu-exporter" else 1)):
        must_refuse, raw = kinds[i % len(kinds)]
        text = mutate(base, rng.choice(places), raw)
        path = tmp_path / f"case{i}.json"
        path.write_text(text)
        cases.append([*subcommand, "--config", str(path), *extra])
        refuse.append(must_refuse)
    # hostile files
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    big.write_text('{"port": 1, "x": "' + "y" * (5 << 20) + '"}')
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"port": "\xff\xfe"}')
    for special in (fifo, Path("/dev/zero"), big, broken):
        cases.append([*subcommand, "--config", str(special), *extra])
        refuse.append(True)
    if command == "hydra-health":  # a FIFO or a device as a secret file (read by a live run,
        # not by --static: at build time no secret exists)
        for secret in (fifo, Path("/dev/zero")):
            sink = {"url": "http://127.0.0.1:9", "topic": "t", "tokenFile": str(secret)}
            path = tmp_path / f"secret-{secret.name}.json"
            path.write_text(json.dumps({**base, "alerts": {"sinks": {"ntfy": sink}}}))
            cases.append(["check", "--config", str(path)])
            refuse.append(True)
    outcomes = run_cases(command, cases)
    failures = [
        f"{outcome['argv']}: {why}"
        for outcome, must in zip(outcomes, refuse, strict=True)
        if (why := problems(outcome, must_refuse=must))
    ]
    assert not failures, "\n".join(failures[:20])
    refused = sum(1 for outcome in outcomes if outcome["rc"] == 78)
    assert refused >= sum(refuse)


LISTEN = ["nas..lan:9", "256.1.1.1:9", " :9", "[::1:9", "127.0.0.1:\u0663\u0664", ":0", "h:99999"]


@pytest.mark.parametrize("command", ["hydra-gpu-exporter", "hydra-health"])
def test_hostile_listen_flags_are_78(command: str, tmp_path: Path) -> None:
    base = EXPORTER if command == "hydra-gpu-exporter" else {**HEALTH, "checks": {}}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**base, "stateDir": str(tmp_path)} if "checks" in base else base))
    run = [] if command == "hydra-gpu-exporter" else ["run"]
    # 192.0.2.1 (TEST-NET-1) parses but is no address of this host: 78, not 75
    values = [*LISTEN, "192.0.2.1:9"]
    cases = [[*run, "--config", str(config), "--listen", value] for value in values]
    outcomes = run_cases(command, cases)
    failures = [
        f"{outcome['argv'][-1]!r}: {why}"
        for outcome in outcomes
        if (why := problems(outcome, must_refuse=True))
    ]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (
            "hydra-health",
            '{"checks": {"a": {"type": "tcp", "host": "h", "port": 1, "interval": NaN}}}',
        ),
        (
            "hydra-launch",
            '{"engine": "command", "command": ["true"], "port": 1, "headroom": Infinity}',
        ),
        ("hydra-gpu-exporter", '{"port": ' + "9" * 5000 + "}"),
    ],
)
def test_a_separate_process_refuses_hostile_input_the_same_way(
    command: str, text: str, tmp_path: Path
) -> None:
    """The plain installed command (not the in-process runner) gives the same one line."""
    config = tmp_path / "config.json"
    config.write_text(text)
    sub = {"hydra-health": ["check", "--static"], "hydra-launch": ["check"]}.get(command, [])
    result = subprocess.run(
        [*command_argv(command), *sub, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0]
