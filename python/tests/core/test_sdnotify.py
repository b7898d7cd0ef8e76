"""sd_notify: datagrams on real path and abstract sockets, and silence without one."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydra_fleet.core.sdnotify import Notifier


@pytest.fixture(name="path_socket")
def fixture_path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify")
    sock.bind(address)
    sock.settimeout(2)
    yield sock, address
    sock.close()


def test_ready_with_status_on_a_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    """READY=1 and STATUS= arrive together in one datagram."""
    sock, address = path_socket
    assert Notifier(address).ready("model loaded")
    assert sock.recv(4096) == b"READY=1\nSTATUS=model loaded"


def test_every_message_kind(path_socket: tuple[socket.socket, str]) -> None:
    """STATUS and STOPPING are sent as systemd expects."""
    sock, address = path_socket
    notifier = Notifier(address)
    notifier.status("loading 40%")
    notifier.stopping()
    assert [sock.recv(4096) for _ in range(2)] == [b"STATUS=loading 40%", b"STOPPING=1"]


def test_abstract_socket() -> None:
    """An address starting with @ is an abstract socket, as systemd writes it."""
    name = f"hydra-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier("@" + name).ready()
        assert sock.recv(4096) == b"READY=1"


def test_reads_notify_socket_from_the_environment(
    path_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an explicit address, $NOTIFY_SOCKET is used."""
    sock, address = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert Notifier().stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside systemd nothing is sent and nothing fails."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready()


def test_dead_socket_is_reported_not_raised(tmp_path: Path) -> None:
    """A socket path with no listener makes send() return False instead of crashing."""
    assert not Notifier(str(tmp_path / "gone")).ready()
