"""The common look of the status pages: one inline stylesheet, no scripts, no external assets.

Pages refresh themselves with `<meta http-equiv="refresh">`, read on a phone (one column,
tables scroll sideways) and mark a state both by colour and by word, so a down check stands
out in a screenshot, to a colour-blind reader and in `--dump-dom` alike.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence

REFRESH_SECONDS = 10

STYLE = """
:root { --bg:#fff; --fg:#1b1f24; --muted:#667085; --line:#d0d5dd; --ok:#1a7f37;
  --bad:#cf222e; --warn:#9a6700; --bar:#e4e7ec; --u0:#2f6fdf; --u1:#8250df; --u2:#bf3989;
  --u3:#0a7ea4; --u4:#b35900; }
@media (prefers-color-scheme: dark) { :root { --bg:#0d1117; --fg:#e6edf3; --muted:#8b949e;
  --line:#30363d; --ok:#3fb950; --bad:#f85149; --warn:#d29922; --bar:#21262d; } }
* { box-sizing: border-box; }
body { margin:0 auto; max-width:72rem; padding:0.75rem; background:var(--bg); color:var(--fg);
  font:15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size:1.3rem; margin:0.2rem 0; } h2 { font-size:1.05rem; margin:1.2rem 0 0.4rem; }
h3 { font-size:0.95rem; margin:0.8rem 0 0.3rem; }
header p, .muted { color:var(--muted); margin:0.2rem 0; font-size:0.9rem; }
a { color:var(--u0); }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:0.35rem 0.5rem; border-bottom:1px solid var(--line);
  vertical-align:top; }
td:first-child { white-space:nowrap; }
th { font-size:0.8rem; color:var(--muted); font-weight:600; white-space:nowrap; }
td.num { text-align:right; white-space:nowrap; font-variant-numeric:tabular-nums; }
.badge { display:inline-block; padding:0 0.45rem; border-radius:0.6rem; font-size:0.8rem;
  font-weight:700; letter-spacing:0.02em; border:1px solid currentColor; white-space:nowrap; }
.s-ok { color:var(--ok); } .s-bad { color:#fff; background:var(--bad); border-color:var(--bad); }
.s-warn { color:var(--warn); } .s-muted { color:var(--muted); }
tr.bad td { background:color-mix(in srgb, var(--bad) 10%, transparent); }
.summary { font-size:1.05rem; font-weight:600; }
.vram-bar { display:flex; height:0.9rem; min-width:8rem; background:var(--bar);
  border-radius:0.25rem; overflow:hidden; border:1px solid var(--line); }
.vram-bar span { display:block; height:100%; }
.u0 { background:var(--u0); } .u1 { background:var(--u1); } .u2 { background:var(--u2); }
.u3 { background:var(--u3); } .u4 { background:var(--u4); }
.units { font-size:0.85rem; color:var(--muted); margin:0.15rem 0 0; padding:0; list-style:none; }
.units i { display:inline-block; width:0.6rem; height:0.6rem; margin-right:0.3rem;
  border-radius:0.15rem; }
.detail { font-family:ui-monospace, SFMono-Regular, Menlo, monospace; font-size:0.85rem;
  word-break:break-word; }
.host { border:1px solid var(--line); border-radius:0.5rem; padding:0.5rem 0.75rem;
  margin:0.6rem 0; } .host.bad { border-color:var(--bad); border-width:2px; }
.host h2 { margin:0.2rem 0; }
footer { margin-top:1.5rem; color:var(--muted); font-size:0.8rem; }
@media (max-width: 40rem) {
  /* a phone: each row becomes a card, each cell a "label value" line */
  table, tbody, tr, td { display:block; width:100%; } thead { display:none; }
  tr { border:1px solid var(--line); border-radius:0.4rem; margin:0 0 0.5rem; padding:0.2rem 0; }
  td { border:0; padding:0.15rem 0.6rem; display:grid; grid-template-columns:6.5rem 1fr;
    gap:0.5rem; }
  td::before { content:attr(data-label); color:var(--muted); font-size:0.8rem; }
  td:first-child { display:block; font-size:1.05rem; } td:first-child::before { content:none; }
  td:empty { display:none; }
  tr.bad { border-color:var(--bad); border-width:2px; }
}
"""

OK_STATES = {"up", "ok", "healthy", "ready", "delivered", "running"}
BAD_STATES = {"down", "failed", "unhealthy", "no answer", "lost", "refused", "dead"}
WARN_STATES = {"blocked", "flapping", "waiting", "starting", "loading", "firing"}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def state_class(state: str) -> str:
    if state in OK_STATES:
        return "s-ok"
    if state in BAD_STATES:
        return "s-bad"
    if state in WARN_STATES:
        return "s-warn"
    return "s-muted"


def badge(state: str) -> str:
    """The state as a word in a coloured pill; bad states in capitals, filled red."""
    label = state.upper() if state in BAD_STATES else state
    return f'<span class="badge {state_class(state)}" data-state="{esc(state)}">{esc(label)}</span>'


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 1024**3:.1f} GiB"


def ago(seconds: float | None) -> str:
    """`42s`, `5m 3s`, `2h 10m`, `3d 4h`."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def clock(epoch: float | None) -> str:
    """UTC wall-clock time, `2026-12-01 10:02:03Z`."""
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


def since(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "-"
    return f'<span title="{esc(clock(epoch))}">{esc(ago(now - epoch))} ago</span>'


def vram_bar(
    used: float | None,
    total: float | None,
    units: Sequence[tuple[str, float]],
    *,
    legend: bool = True,
) -> str:
    """A bar of the GPU's memory, one coloured segment per unit, with the figures beside it."""
    if not total:
        return '<span class="muted">no VRAM figures</span>'
    used = used or 0.0
    segments = []
    items = []
    accounted = 0.0
    for n, (unit, held) in enumerate(units):
        part = min(held, max(0.0, total - accounted))
        accounted += part
        colour = f"u{n % 5}"
        segments.append(
            f'<span class="{colour}" style="width:{100 * part / total:.2f}%" '
            f'title="{esc(unit)}: {esc(gib(held))}"></span>'
        )
        items.append(f'<li><i class="{colour}"></i>{esc(unit)} {esc(gib(held))}</li>')
    rest = max(0.0, min(used, total) - accounted)
    if rest > 0:
        segments.append(
            f'<span class="u4" style="width:{100 * rest / total:.2f}%" '
            f'title="not attributed to a unit"></span>'
        )
    pct = 100 * used / total
    return (
        f'<div class="vram-bar" role="meter" aria-valuemin="0" aria-valuemax="{total:.0f}" '
        f'aria-valuenow="{used:.0f}" aria-label="VRAM used">{"".join(segments)}</div>'
        f'<div class="muted">{esc(gib(used))} of {esc(gib(total))} ({pct:.0f}%)</div>'
        + (f'<ul class="units">{"".join(items)}</ul>' if legend and items else "")
    )


def table(headers: Sequence[str], rows: Iterable[tuple[Sequence[str], str]], cls: str = "") -> str:
    """A table of pre-escaped cells; each row is (cells, row class)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{row_cls}">'
        + "".join(
            (f'<td data-label="{esc(h)}"><div>{c}</div></td>' if c else "<td></td>")
            if n
            else f"<td>{c}</td>"
            for n, (h, c) in enumerate(zip(headers, cells, strict=True))
        )
        + "</tr>"
        for cells, row_cls in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>'
    return (
        f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def page(title: str, subtitle: str, body: str, *, refresh: int = REFRESH_SECONDS) -> str:
    from hydra_fleet import __version__  # noqa: PLC0415 - avoid an import cycle at load

    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{refresh}">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><header><h1>{esc(title)}</h1><p>{subtitle}</p></header>\n{body}\n"
        f"<footer>hydra-fleet {esc(__version__)} · refreshes every {refresh} s · "
        f"{esc(clock(time.time()))}</footer></body></html>\n"
    )
