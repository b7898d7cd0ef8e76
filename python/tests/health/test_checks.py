"""Every check kind against real peers on loopback, including ones that hang or never accept."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from hydra_fleet.health.checks import CheckContext, run_check
from hydra_fleet.health.checks.gpu import judge
from hydra_fleet.health.config import CheckConfig
from tests.health.conftest import write_script
from tests.health.servers import (
    http_server,
    never_accepting,
    silent_tcp_server,
    status_app,
)
from tests.net import free_port

SLACK = 0.5  # the deadline may be overrun by scheduling noise on a busy 2-core machine


@pytest.fixture
async def ctx() -> AsyncIterator[CheckContext]:
    context = CheckContext.create()
    yield context
    await context.close()


def http(url: str, **kw: object) -> CheckConfig:
    return CheckConfig(type="http", url=url, timeout=1.0, connect_timeout=0.5, **kw)  # type: ignore[arg-type]


async def test_http_answering_passes_and_failing_fails(ctx: CheckContext) -> None:
    async with http_server(status_app()) as port:
        ok = await run_check(http(f"http://127.0.0.1:{port}/ok"), ctx)
        bad = await run_check(http(f"http://127.0.0.1:{port}/fail"), ctx)
    assert ok.ok
    assert ok.detail == "HTTP 200"
    assert not bad.ok
    assert bad.detail == "HTTP 500"


async def test_http_body_match_and_expected_status(ctx: CheckContext) -> None:
    async with http_server(status_app()) as port:
        base = f"http://127.0.0.1:{port}"
        match = await run_check(http(f"{base}/ok", body_match="ready"), ctx)
        mismatch = await run_check(http(f"{base}/ok", body_match="^loaded$"), ctx)
        wanted_500 = await run_check(http(f"{base}/fail", expect_status=[500]), ctx)
    assert match.ok
    assert not mismatch.ok
    assert "does not match" in mismatch.detail
    assert wanted_500.ok


async def test_http_post_completion_probe(ctx: CheckContext) -> None:
    async with http_server(status_app()) as port:
        url = f"http://127.0.0.1:{port}/v1/completions"
        good = await run_check(
            http(url, method="POST", json_body={"prompt": "x", "max_tokens": 1}, body_match="text"),
            ctx,
        )
        bad = await run_check(http(url, method="POST", json_body={"prompt": "x"}), ctx)
    assert good.ok
    assert not bad.ok
    assert bad.detail == "HTTP 400"


async def test_http_hanging_after_accept_costs_at_most_the_deadline(ctx: CheckContext) -> None:
    async with http_server(status_app()) as port:
        started = time.monotonic()
        result = await run_check(http(f"http://127.0.0.1:{port}/hang"), ctx)
        took = time.monotonic() - started
    assert not result.ok
    assert "deadline" in result.detail
    assert 0.9 <= took < 1.0 + SLACK


async def test_http_never_accepting_fails_at_connect_timeout(ctx: CheckContext) -> None:
    with never_accepting() as port:
        started = time.monotonic()
        result = await run_check(http(f"http://127.0.0.1:{port}/"), ctx)
        took = time.monotonic() - started
    assert not result.ok
    assert took < 1.0 + SLACK


async def test_http_refused_fails_fast(ctx: CheckContext) -> None:
    port = free_port()
    result = await run_check(http(f"http://127.0.0.1:{port}/"), ctx)
    assert not result.ok
    assert result.detail == f"cannot connect to 127.0.0.1:{port}: Connection refused"
    assert result.duration < 0.5


async def test_tcp_checks(ctx: CheckContext) -> None:
    def tcp(port: int) -> CheckConfig:
        return CheckConfig(type="tcp", host="127.0.0.1", port=port, timeout=1, connect_timeout=0.5)

    async with silent_tcp_server() as port:
        silent = await run_check(tcp(port), ctx)
    closed = free_port()
    refused = await run_check(tcp(closed), ctx)
    with never_accepting() as port:
        started = time.monotonic()
        hung = await run_check(tcp(port), ctx)
        took = time.monotonic() - started
    assert silent.ok
    assert not refused.ok
    assert refused.detail == f"cannot connect to 127.0.0.1:{closed}: Connection refused"
    assert not hung.ok
    assert "no connection within 0.5 s" in hung.detail
    assert took < 0.5 + SLACK


async def test_command_check_and_hung_command_group_is_killed(
    ctx: CheckContext, tmp_path: Path
) -> None:
    marker = tmp_path / "child-alive"
    hang = write_script(tmp_path / "hang.sh", f"(sleep 2; touch {marker}) &\nsleep 30\n")
    passing = CheckConfig(type="command", command=["true"], timeout=1, connect_timeout=1)
    failing = CheckConfig(
        type="command",
        command=["sh", "-c", "echo queue stuck; exit 3"],
        timeout=1,
        connect_timeout=1,
    )
    hung = CheckConfig(type="command", command=[str(hang)], timeout=0.5, connect_timeout=0.5)
    assert (await run_check(passing, ctx)).ok
    failed = await run_check(failing, ctx)
    assert not failed.ok
    assert failed.detail == "exit 3: queue stuck"
    started = time.monotonic()
    result = await run_check(hung, ctx)
    assert not result.ok
    assert time.monotonic() - started < 0.5 + SLACK
    await asyncio.sleep(2.5)
    assert not marker.exists(), "the hung command's background child outlived the deadline"


async def test_systemd_check_uses_the_configured_systemctl(
    tmp_path: Path, fake_systemctl: tuple[Path, Path, Path]
) -> None:
    script, state, _ = fake_systemctl
    (state / "a.service").write_text("active\n")
    (state / "b.service").write_text("failed\n")
    ctx = CheckContext.create(str(script))
    try:
        a = await run_check(CheckConfig(type="systemd", unit="a.service"), ctx)
        b = await run_check(CheckConfig(type="systemd", unit="b.service"), ctx)
    finally:
        await ctx.close()
    assert a.ok
    assert a.detail == "a.service is active"
    assert not b.ok
    assert b.detail == "b.service is failed"


METRICS = """# HELP hydra_gpu_up 1 when the device answers
# TYPE hydra_gpu_up gauge
hydra_gpu_up{{vendor="nvidia",index="0",uuid="GPU-a"}} 1
hydra_gpu_up{{vendor="nvidia",index="1",uuid="GPU-b"}} {second}
hydra_gpu_up{{vendor="amd",index="0",uuid="x"}} 1
# HELP hydra_gpu_info identity
# TYPE hydra_gpu_info gauge
hydra_gpu_info{{vendor="nvidia",index="1",uuid="GPU-b",name="NVIDIA GeForce RTX 4090"}} 1
# HELP hydra_gpu_expected_devices inventory count
# TYPE hydra_gpu_expected_devices gauge
hydra_gpu_expected_devices{{vendor="nvidia"}} 2
hydra_gpu_expected_devices{{vendor="amd"}} {amd}
"""


def test_gpu_judge_counts_up_devices_per_vendor_and_names_the_missing_cards() -> None:
    assert judge(METRICS.format(second=1, amd=1)) == (True, "amd 1/1 up, nvidia 2/2 up")
    ok, detail = judge(METRICS.format(second=0, amd=1))
    assert not ok
    assert detail == "GPUs missing: nvidia 1/2 up: nvidia 1 (NVIDIA GeForce RTX 4090) down"
    # a card that fell off the bus may not be listed at all: counted, since it has no name
    ok, detail = judge(METRICS.format(second=1, amd=2))
    assert not ok
    assert detail == "GPUs missing: amd 1/2 up: 1 amd not listed"
    assert judge("hydra_gpu_up 1\n") == (False, "exporter reports no hydra_gpu_expected_devices")


async def test_gpu_check_scrapes_a_real_exporter_endpoint(ctx: CheckContext) -> None:
    body = {"text": METRICS.format(second=0, amd=1)}

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=body["text"], content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with http_server(app) as port:
        check = CheckConfig(type="gpu", url=f"http://127.0.0.1:{port}/metrics")
        lost = await run_check(check, ctx)
        body["text"] = METRICS.format(second=1, amd=1)
        back = await run_check(check, ctx)
    assert not lost.ok
    assert "nvidia 1/2" in lost.detail
    assert back.ok


async def test_a_check_that_raises_is_a_failed_check_with_the_exception(
    ctx: CheckContext,
) -> None:
    """`nas..lan` makes the resolver raise UnicodeError: a failed check saying so, not a
    check task that dies and stays "pending" forever."""
    check = CheckConfig(type="tcp", host="nas..lan", port=80, timeout=1.0, connect_timeout=0.5)
    result = await run_check(check, ctx)
    assert not result.ok
    assert not result.inconclusive
    assert re.match(r"Unicode\w*Error: ", result.detail), result.detail


EMFILE_PROBE = """
import asyncio, json, resource, socket, sys
from hydra_fleet.health.checks import CheckContext, run_check
from hydra_fleet.health.config import CheckConfig

async def main():
    ctx = CheckContext.create()
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    hold = []
    try:
        while True:
            hold.append(socket.socket())
    except OSError:
        pass
    checks = {
        "tcp": CheckConfig(type="tcp", host="127.0.0.1", port=int(sys.argv[1]), timeout=1.0,
                           connect_timeout=0.5),
        "http": CheckConfig(type="http", url=f"http://127.0.0.1:{sys.argv[1]}/", timeout=1.0,
                            connect_timeout=0.5),
        "command": CheckConfig(type="command", command=["true"], timeout=1.0,
                               connect_timeout=0.5),
    }
    out = {}
    for name, check in checks.items():
        r = await run_check(check, ctx)
        out[name] = [r.ok, r.inconclusive, r.detail]
    for s in hold:
        s.close()
    await ctx.close()
    print(json.dumps(out))

asyncio.run(main())
"""


async def test_out_of_descriptors_is_inconclusive_not_a_failed_service() -> None:
    """Under a real descriptor limit, exhausted: every kind of check reports that the agent
    could not run it, which the agent must not count against the service."""
    async with http_server(status_app()) as port:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            EMFILE_PROBE,
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    results = json.loads(out)
    for name, (ok, inconclusive, detail) in results.items():
        assert not ok, name
        assert inconclusive, (name, detail)
        assert "Too many open files" in detail, (name, detail)
