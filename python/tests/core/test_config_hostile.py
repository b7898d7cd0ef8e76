"""Hostile config input: every case is one `ConfigError` line naming the field, never a
traceback, a hang, or a value silently taken."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from hydra_fleet.core.config import host_problem, load, parse_host_port, parse_json_text
from hydra_fleet.core.errors import ConfigError
from hydra_fleet.core.secrets import read_secret
from tests.core.test_config import Sample, write


def load_text(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(Sample, path)
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 1000
    return caught.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"interval": NaN}', "NaN is not a number"),
        ('{"interval": Infinity}', "Infinity is not a number"),
        ('{"interval": -Infinity}', "-Infinity is not a number"),
        ('{"interval": 1e308}', "beyond +/-1e15"),
        ('{"interval": 1e400}', "beyond +/-1e15"),
        ('{"port": ' + "9" * 5000 + "}", "(5000 digits) is beyond +/-2^53"),
        ('{"port": 18446744073709551616}', "beyond +/-2^53"),
        ('{"settings": ' + "[" * 100_000 + "]" * 100_000 + "}", "at most 32"),
    ],
)
def test_numbers_and_nesting_no_config_holds(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in str(load_text(tmp_path, text))


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"listenAddress": "127.0.0.1\u0000evil"}, "listenAddress"),
        ({"labels": {"a\u0000b": "x"}}, "labels.a\\0b"),
        ({"labels": {"a": "x\u0000"}}, "labels.a"),
    ],
)
def test_nul_bytes_are_refused_naming_the_field(
    tmp_path: Path, data: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(Sample, write(tmp_path, data))
    assert caught.value.field == field
    assert "NUL" in caught.value.problem


def test_a_huge_value_is_not_echoed_back(tmp_path: Path) -> None:
    """A 50 MB string in the wrong place: the error line stays short, and says so."""
    huge = "x" * (50 * 1024 * 1024)
    path = tmp_path / "config.json"
    path.write_text('{"port": "' + huge + '"}')
    err = load_text(tmp_path, path.read_text())
    assert "larger than 4 MiB" in str(err)
    small = write(tmp_path, {"port": "y" * 100_000, "devices": []})
    with pytest.raises(ConfigError) as caught:
        load(Sample, small)
    assert len(str(caught.value)) < 400
    assert caught.value.field == "port"


def test_a_fifo_as_config_or_secret_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[str] = []

    def attempt() -> None:
        for call in (lambda: load(Sample, fifo), lambda: read_secret(fifo, "cfg", "tokenFile")):
            try:
                call()
            except ConfigError as err:
                outcome.append(str(err))

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "reading a FIFO hung"
    assert len(outcome) == 2
    assert all("expected a regular file, found a FIFO" in line for line in outcome)


def test_a_device_as_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="found a device"):
        load(Sample, Path("/dev/zero"))


def test_secret_reader_strips_one_newline_and_refuses_empty(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("  tok en \n\n")
    assert read_secret(secret, "cfg", "f") == "  tok en \n"
    secret.write_text("\n")
    with pytest.raises(ConfigError, match=r"cfg: f: secret file .* is empty"):
        read_secret(secret, "cfg", "f")
    secret.write_bytes(b"x" * (65 * 1024))
    with pytest.raises(ConfigError, match="larger than 64 KiB"):
        read_secret(secret, "cfg", "f")


@pytest.mark.parametrize(
    "text",
    ["nas..lan:80", "256.1.1.1:80", " :80", "[::1:80", "[nas.lan]:80", "a_b.lan:80", "-x:80"],
)
def test_listen_with_a_bad_host_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"host name or IP address|IPv6"):
        parse_host_port(text)


@pytest.mark.parametrize(
    "text", ["127.0.0.1:\u0663\u0664\u0665\u0666", "h:+80", "h: 80", "h:080000"]
)
def test_ports_are_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError, match="port from 1 to 65535"):
        parse_host_port(text)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("nas.lan", True),
        ("bücher.example", True),
        ("10.0.0.1", True),
        ("::1", True),
        ("[fe80::1]", True),
        ("nas..lan", False),
        ("", False),
        ("a" * 64 + ".lan", False),
        ("999.1.1.1", False),
    ],
)
def test_host_names_are_checked_as_idna(host: str, ok: bool) -> None:
    assert (host_problem(host) is None) is ok


def test_json_depth_counts_only_outside_strings() -> None:
    assert parse_json_text('{"a": "' + "[" * 1000 + '"}', "f") == {"a": "[" * 1000}
