"""The server runner: SO_REUSEADDR, EADDRINUSE retry, clean shutdown on signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from hydra_fleet.core.errors import BindError, ListenAddressError
from hydra_fleet.core.server import bind_socket, bind_with_retry, serve
from tests.net import free_port

HELLO = Path(__file__).with_name("hello_server.py")


def start(port: int, bind_timeout: float = 20.0) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HELLO), str(port), str(bind_timeout)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_until_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.02)
    pytest.fail(f"server on {port} did not come up")


@contextlib.contextmanager
def hammering(port: int) -> Iterator[list[int]]:
    """Clients requesting as fast as they can; yields the running count of successes."""
    done = threading.Event()
    successes = [0]

    def loop() -> None:
        while not done.is_set():
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp,
            ):
                resp.read()
                successes[0] += 1

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        yield successes
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=5)


RESTARTS = 3  # each start after the first binds while the old connections sit in TIME_WAIT


def test_restarts_on_the_same_port_under_load() -> None:
    """Stop/starts while clients hammer the port: every start binds at once (SO_REUSEADDR
    with the last instance's connections in TIME_WAIT), every stop is clean."""
    port = free_port()
    with hammering(port) as successes:
        for round_ in range(RESTARTS):
            proc = start(port, bind_timeout=20)
            wait_until_serving(port, proc)
            served_before = successes[0]
            deadline = time.monotonic() + 5
            while successes[0] == served_before and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
            assert proc.returncode == 0, f"round {round_}: {err.decode()}"
            assert b"address in use" not in err, f"round {round_} had to retry: {err.decode()}"
    assert successes[0] > RESTARTS


def test_a_held_port_is_retried_until_it_frees() -> None:
    """When the old instance still holds the port, the new one waits for it instead of failing."""
    port = free_port()
    holder = bind_socket("127.0.0.1", port)
    proc = start(port, bind_timeout=20)
    time.sleep(1.0)
    assert proc.poll() is None
    holder.close()
    wait_until_serving(port, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"address in use, retrying" in err


async def test_gives_up_with_a_clear_message_after_the_timeout() -> None:
    """A port held for longer than the retry window fails with the address and a hint."""
    port = free_port()
    holder = bind_socket("127.0.0.1", port)
    try:
        started = time.monotonic()
        with pytest.raises(BindError, match=f"127.0.0.1:{port}: address still in use after 0.5 s"):
            await bind_with_retry("127.0.0.1", port, bind_timeout=0.5)
        assert 0.4 < time.monotonic() - started < 3
    finally:
        holder.close()


async def test_other_bind_errors_fail_at_once() -> None:
    """An address that is not ours is not retried, and is a config error (78), not 75."""
    with pytest.raises(ListenAddressError, match=r"192\.0\.2\.1"):
        await bind_with_retry("192.0.2.1", free_port(), bind_timeout=5)


async def test_serve_runs_on_started_before_stop() -> None:
    """serve() listens, runs on_started, and returns once stop is set."""
    port = free_port()
    stop = asyncio.Event()
    started = asyncio.Event()

    async def on_started() -> None:
        started.set()

    task = asyncio.create_task(
        serve(web.Application(), "127.0.0.1", port, on_started=on_started, stop=stop)
    )
    await asyncio.wait_for(started.wait(), 5)
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    stop.set()
    await asyncio.wait_for(task, 5)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
