"""Config loading: typed conversion, unknown keys, field paths in errors, secrets, overrides."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest

from hydra_fleet.core.config import (
    FieldProblem,
    Port,
    Secret,
    in_range,
    load,
    parse_host_port,
)
from hydra_fleet.core.errors import EX_CONFIG, ConfigError


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    memory_bytes: Annotated[int, in_range(1)]
    lost: bool = False


@dataclasses.dataclass(frozen=True)
class Alerts:
    api_key_file: Secret | None = None


@dataclasses.dataclass(frozen=True)
class Sample:
    listen_address: str = "127.0.0.1"
    port: Port = 9445
    backend: Literal["auto", "synthetic"] = "auto"
    devices: list[Device] = dataclasses.field(default_factory=list)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    alerts: Alerts = dataclasses.field(default_factory=Alerts)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    interval: float = 5.0

    def __post_init__(self) -> None:
        if self.backend == "synthetic" and not self.devices:
            raise FieldProblem("devices", "the synthetic backend needs at least one device")


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def error_for(tmp_path: Path, data: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(Sample, write(tmp_path, data))
    return caught.value


def test_valid_file_converts_camel_case_keys_to_typed_fields(tmp_path: Path) -> None:
    """camelCase keys in the file fill snake_case fields, nested objects included."""
    config = load(
        Sample,
        write(
            tmp_path,
            {
                "listenAddress": "0.0.0.0",
                "port": 9000,
                "backend": "synthetic",
                "devices": [{"name": "A", "memoryBytes": 1024}],
                "interval": 2,
                "settings": {"anything": [1, 2]},
            },
        ),
    )
    assert config.listen_address == "0.0.0.0"
    assert config.port == 9000
    assert config.devices == [Device("A", 1024)]
    assert config.interval == 2.0
    assert isinstance(config.interval, float)
    assert config.settings == {"anything": [1, 2]}


def test_no_file_gives_defaults() -> None:
    """Without a config file every field takes its default."""
    assert load(Sample, None) == Sample()


def test_typo_in_key_names_the_key_and_suggests_the_right_one(tmp_path: Path) -> None:
    """An unknown key is an error, with the closest known key suggested."""
    err = error_for(tmp_path, {"listenAdress": "0.0.0.0"})
    assert err.exit_code == EX_CONFIG
    assert err.field == "listenAdress"
    assert 'did you mean "listenAddress"' in str(err)
    assert str(tmp_path / "config.json") in str(err)


def test_wrong_type_deep_in_a_list_names_the_full_path(tmp_path: Path) -> None:
    """The field path points at the exact element that is wrong."""
    err = error_for(
        tmp_path,
        {"devices": [{"name": "A", "memoryBytes": 1}, {"name": "B", "memoryBytes": "16G"}]},
    )
    assert err.field == "devices[1].memoryBytes"
    assert err.problem == 'expected an integer, got "16G"'


def test_booleans_are_not_integers(tmp_path: Path) -> None:
    """JSON true is not accepted where a number is expected."""
    assert error_for(tmp_path, {"port": True}).problem == "expected an integer, got true"


def test_range_and_literal_checks(tmp_path: Path) -> None:
    """Annotated checks and Literal choices report what is allowed."""
    assert "from 1 to 65535" in error_for(tmp_path, {"port": 70000}).problem
    err = error_for(tmp_path, {"backend": "nvml2"})
    assert err.problem == 'expected one of "auto", "synthetic", got "nvml2"'


def test_missing_required_key(tmp_path: Path) -> None:
    """A required key that is absent is named with its expected type."""
    err = error_for(tmp_path, {"devices": [{"name": "A"}]})
    assert err.field == "devices[0].memoryBytes"
    assert err.problem.startswith("missing; expected an integer")


def test_cross_field_problem_from_post_init_names_the_field(tmp_path: Path) -> None:
    """A dataclass can reject a combination of values and the error still names the field."""
    err = error_for(tmp_path, {"backend": "synthetic"})
    assert err.field == "devices"
    assert "at least one device" in err.problem


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got a list"),
        (b"\xff\xfe", "expected UTF-8 text"),
    ],
)
def test_unreadable_content(tmp_path: Path, content: str | bytes, expected: str) -> None:
    """Broken files are reported with the file name, never a traceback."""
    path = tmp_path / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load(Sample, path)


def test_missing_file(tmp_path: Path) -> None:
    """A config file that does not exist names itself."""
    with pytest.raises(ConfigError, match="cannot read the file: No such file or directory"):
        load(Sample, tmp_path / "absent.json")


def test_secret_is_read_at_load_and_never_shown(tmp_path: Path) -> None:
    """A *File key is read once; the value stays out of repr and str."""
    secret = tmp_path / "key"
    secret.write_text("s3cr3t-value\n")
    config = load(Sample, write(tmp_path, {"alerts": {"apiKeyFile": str(secret)}}))
    assert config.alerts.api_key_file is not None
    assert config.alerts.api_key_file.value == "s3cr3t-value"
    assert "s3cr3t" not in repr(config)
    assert "s3cr3t" not in str(config.alerts.api_key_file)


def test_missing_secret_file_is_a_config_error(tmp_path: Path) -> None:
    """A secret file that cannot be read stops the start with the key's path."""
    err = error_for(tmp_path, {"alerts": {"apiKeyFile": str(tmp_path / "nope")}})
    assert err.field == "alerts.apiKeyFile"
    assert "cannot read secret file" in err.problem


def test_overrides_win_over_the_file_and_are_blamed_on_the_command_line(tmp_path: Path) -> None:
    """Command-line values replace file values; a bad one is reported as coming from there."""
    path = write(tmp_path, {"port": 9000, "listenAddress": "10.0.0.1"})
    config = load(Sample, path, {"port": 9100, "listenAddress": None})
    assert (config.port, config.listen_address) == (9100, "10.0.0.1")
    with pytest.raises(ConfigError) as caught:
        load(Sample, path, {"port": 0})
    assert caught.value.source == "command line"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9445", ("127.0.0.1", 9445)),
        ("[::1]:80", ("::1", 80)),
        (":9445", ("0.0.0.0", 9445)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    """Listen addresses parse as HOST:PORT, [IPv6]:PORT or :PORT."""
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["localhost", "host:0", "host:99999", "host:http"])
def test_parse_host_port_rejects(text: str) -> None:
    """Addresses without a valid port are refused."""
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_host_port(text)
