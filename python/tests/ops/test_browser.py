"""The pages in a real browser: what an operator sees, on a desktop and on a phone.

Plain tests that run their own event loop, as the CLIs do. They skip when Chromium is not
installed (`apt-get install -y chromium`). Screenshots are kept in `$HYDRA_SCREENSHOT_DIR`,
else in pytest's tmp dir; the path is printed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.ops.browser import Page, artifact_dir, browser, chromium, dump_dom
from tests.ops.running import Host

pytestmark = pytest.mark.skipif(chromium() is None, reason="chromium is not installed")

DESKTOP = (1280, 900)
PHONE = (390, 844)

# What a person looking at the page sees, per element: its text, whether it is on screen,
# its colours and its size.
LOOK = """
(() => {
  const seen = (el) => { const r = el.getBoundingClientRect();
    const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const badge = (el) => ({ state: el.dataset.state, text: el.innerText, visible: seen(el),
    background: getComputedStyle(el).backgroundColor, color: getComputedStyle(el).color,
    row: el.closest('tr') ? el.closest('tr').cells[0].innerText.trim() : null });
  const bars = [...document.querySelectorAll('.vram-bar')].map((bar) => ({
    width: bar.getBoundingClientRect().width,
    filled: [...bar.children].reduce((n, s) => n + s.getBoundingClientRect().width, 0),
    gpu: bar.closest('tr').cells[0].innerText.trim(), visible: seen(bar) }));
  return { badges: [...document.querySelectorAll('.badge')].map(badge), bars,
    overflowX: document.documentElement.scrollWidth > window.innerWidth + 1,
    summary: (document.querySelector('.summary') || {}).innerText,
    refresh: !!document.querySelector('meta[http-equiv=refresh]') };
})()
"""


def _red(css: str) -> bool:
    r, g, b = (int(float(x)) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return r > 150 and g < 90 and b < 90


def _badge(look: dict[str, Any], row: str) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [b for b in look["badges"] if b["row"] and b["row"].split("\n")[0].split()[0] == row]
    return found


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = artifact_dir(tmp_path_factory.mktemp("screenshots"))
    print(f"screenshots in {path}")  # shown with -s; the files are kept
    return path


async def _look(page: Page, url: str, size: tuple[int, int], shot: Path) -> dict[str, Any]:
    await page.open(url, *size)
    await page.screenshot(shot)
    look: dict[str, Any] = await page.evaluate(LOOK)
    return look


def test_agent_page_in_a_browser(host: Host, shots: Path, tmp_path: Path) -> None:
    asyncio.run(_agent_page_in_a_browser(host, shots, tmp_path))


async def _agent_page_in_a_browser(host: Host, shots: Path, tmp_path: Path) -> None:
    async with browser(tmp_path / "profile") as page:
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            shot = shots / f"agent-{label}.png"
            look = await _look(page, host.agent + "/", size, shot)
            assert shot.stat().st_size > 10_000
            down = _badge(look, "inference-big")
            assert down["text"] == "DOWN"
            assert down["visible"]
            assert _red(down["background"]), down  # filled red: visibly marked
            up = _badge(look, "inference-llm")
            assert up["text"] == "up"
            assert not _red(up["background"])
            bars = [b for b in look["bars"] if b["visible"]]
            assert [b["gpu"] for b in bars] == [
                "synthetic:0 Demo RTX 4090",
                "synthetic:1 Demo Radeon Pro W7500",
            ]
            # 16 of 24 GiB held and 3 of 8: the filled part of each bar shows it
            assert bars[0]["filled"] / bars[0]["width"] == pytest.approx(16 / 24, abs=0.03)
            assert bars[1]["filled"] / bars[1]["width"] == pytest.approx(3 / 8, abs=0.03)
            assert look["summary"].startswith("UNHEALTHY")
            assert look["refresh"]


def test_fleet_page_in_a_browser(host: Host, shots: Path, tmp_path: Path) -> None:
    asyncio.run(_fleet_page_in_a_browser(host, shots, tmp_path))


async def _fleet_page_in_a_browser(host: Host, shots: Path, tmp_path: Path) -> None:
    async with browser(tmp_path / "profile") as page:
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            look = await _look(page, host.agent + "/fleet", size, shots / f"fleet-{label}.png")
            silent = _badge(look, "silent")
            assert silent["text"] == "NO ANSWER"
            assert silent["visible"]
            assert _red(silent["background"])
            assert "not answering: silent" in look["summary"]
            bars = [b for b in look["bars"] if b["visible"]]
            assert [b["gpu"] for b in bars] == ["ops-test", "ops-test"]  # its two live GPUs


def test_exporter_page_in_a_browser(host: Host, shots: Path, tmp_path: Path) -> None:
    asyncio.run(_exporter_page_in_a_browser(host, shots, tmp_path))


async def _exporter_page_in_a_browser(host: Host, shots: Path, tmp_path: Path) -> None:
    async with browser(tmp_path / "profile") as page:
        look = await _look(page, host.exporter + "/", PHONE, shots / "exporter-phone.png")
        assert len([b for b in look["bars"] if b["visible"] and b["filled"] > 0]) == 2
        lost = _badge(look, "synthetic:2")
        assert lost["text"] == "DOWN"
        assert _red(lost["background"])
        assert look["summary"].startswith("UNHEALTHY")  # one of three GPUs is lost


def test_dump_dom_of_the_fleet_page(host: Host, tmp_path: Path) -> None:
    dom = dump_dom(tmp_path / "profile", host.agent + "/fleet")
    assert 'data-state="no answer"' in dom
    assert "silent" in dom
