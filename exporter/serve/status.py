"""The status page: is mail working, for every target, in one look.

:func:`snapshot` reads the store (no I/O) into plain data, served as JSON at
``/api/v1/status``; :func:`render` turns the same data into a self-contained HTML page (no
external assets, readable on a phone, refreshing itself).
"""

from __future__ import annotations

import html
import time
from typing import Any

from exporter import __version__
from exporter.config.site import Location
from exporter.incidents.model import Incident, ProviderState
from exporter.result import ProbeResult
from exporter.silences import SilenceState
from exporter.state import Store

REFRESH_SECONDS = 15
NONE = "&#8211;"


def _result(result: ProbeResult) -> dict[str, Any]:
    return {
        "check": result.check.value,
        "success": result.success,
        "started": result.started,
        "duration_seconds": round(result.duration, 4),
        "phase": result.phase.value if result.phase else None,
        "reason": result.reason.value if result.reason else None,
        "detail": result.detail or None,
        "delivery_seconds": (
            None if result.delivery_seconds is None else round(result.delivery_seconds, 4)
        ),
        "phases": {phase.value: round(seconds, 4) for phase, seconds in result.phases.items()},
        "backoff_since": result.found.backoff_since,
        "backoff_until": result.found.backoff_until,
    }


def _incident(incident: Incident) -> dict[str, Any]:
    return {
        "provider": incident.provider,
        "service": incident.service,
        "incident": incident.id,
        "classification": incident.classification,
        "status": incident.status,
        "start": incident.start,
        "title": incident.title,
    }


def _provider(state: ProviderState) -> dict[str, Any]:
    return {
        "incidents": [_incident(i) for i in state.incidents],
        "open": state.open_count,
        "last_success": state.last_success,
        "last_error": state.last_error or None,
    }


def _location(location: Location | None) -> dict[str, Any] | None:
    if location is None:
        return None
    return {
        "name": location.name,
        "label": location.label,
        "peers": [{"name": p.name, "url": p.url} for p in location.peers],
    }


def _maintenance(silences: SilenceState | None) -> dict[str, Any] | None:
    if silences is None or not silences.configured:
        return None
    return {
        "read": not silences.error and silences.last_success is not None,
        "last_success": silences.last_success,
        "error": silences.error or None,
        "failing_since": silences.failing_since,
        "active_silences": silences.active,
        "left_out": silences.left_out,
        "why_left_out": silences.why_left_out or None,
    }


def snapshot(
    store: Store, location: Location | None = None, silences: SilenceState | None = None
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data: with ``location``, where the probes run
    from; with ``silences``, the planned maintenance (Alertmanager's silences) of each target."""
    now = time.time()
    targets = []
    for name, target in store.targets.items():
        checks = []
        for check, state in target.checks.items():
            last = state.last
            checks.append(
                {
                    "check": check.value,
                    "state": "pending" if last is None else "up" if last.success else "down",
                    "since": state.since,
                    "last_success": state.last_success,
                    "consecutive_failures": state.consecutive_failures,
                    "last": _result(last) if last else None,
                    "history": [
                        {
                            "ended": outcome.ended,
                            "success": outcome.success,
                            "reason": outcome.reason.value if outcome.reason else None,
                            "phase": outcome.phase or None,
                            "delivery_seconds": outcome.delivery_seconds,
                        }
                        for outcome in state.history
                    ],
                }
            )
        states = {c["state"] for c in checks}
        provider = target.labels.get("provider", "")
        watched = next((state for p, state in store.providers.items() if p == provider), None)
        targets.append(
            {
                "name": name,
                "provider": provider or None,
                "provider_status": _provider(watched) if watched is not None else None,
                "state": "down" if "down" in states else "pending" if "pending" in states else "up",
                "checks": checks,
                "last_delivery_seconds": target.last_delivery,
                "recent": [_result(r) for r in reversed(target.recent)],
                "maintenance": [
                    {"silence": n.silence, "ends": n.ends, "comment": n.comment or None}
                    for n in (silences.notes_of(name, now) if silences is not None else ())
                ],
            }
        )
    return {
        "version": __version__,
        "generated": now,
        "location": _location(location),
        "maintenance": _maintenance(silences),
        "config_reload_successful": store.reload_successful,
        "providers": {name: _provider(state) for name, state in store.providers.items()},
        "targets": targets,
    }


_CSS = """
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#cf222e;--wait:#9a6700;--line:#8884}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:72rem;padding:1rem}
h1{font-size:1.4rem;margin:.2rem 0}
h2{font-size:1.15rem;margin:0;display:flex;gap:.6rem;align-items:center;flex-wrap:wrap}
.summary{padding:.8rem 1rem;border-radius:.5rem;font-weight:600;margin:1rem 0;color:#fff}
.summary.up{background:var(--ok)}.summary.down{background:var(--bad)}
.summary.pending{background:var(--wait)}
.target{border:1px solid var(--line);border-radius:.5rem;padding:.8rem 1rem;margin:1rem 0}
.badge{display:inline-block;border-radius:1rem;padding:0 .6rem;font-size:.8rem;
font-weight:700;color:#fff;text-transform:uppercase;letter-spacing:.03em}
.up .badge,.badge.up{background:var(--ok)}.down .badge,.badge.down{background:var(--bad)}
.pending .badge,.badge.pending{background:var(--wait)}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;margin:.6rem 0}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);
vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;opacity:.75}
.incident{border-left:4px solid var(--bad);padding:.2rem .6rem;margin:.4rem 0}
.calm{opacity:.8;font-size:.9rem}
.strip{margin:.25rem 0 0}.strip rect.ok{fill:var(--ok)}.strip rect.failed{fill:var(--bad)}
.spark{display:flex;gap:.4rem;align-items:center;font-size:.75rem;opacity:.85}
.spark polyline{fill:none;stroke:currentColor;stroke-width:1.5}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
.maint{border-left:4px solid var(--wait);padding:.2rem .6rem;margin:.4rem 0;
word-break:break-word}
.badge.maint{background:var(--wait);border:0;padding:0 .6rem;margin:0}
.where{margin:.2rem 0 0;opacity:.9;word-break:break-word}.where a{margin-right:.5rem}
.why{color:var(--bad);font-weight:600}.backoff{color:var(--wait);font-weight:600}.detail{opacity:.8;font-size:.85rem;word-break:break-word}
.phases{font-size:.8rem;opacity:.85}
.bar{display:flex;height:.5rem;border-radius:.25rem;overflow:hidden;min-width:6rem;
background:var(--line)}
.bar span{display:block;height:100%}
details summary{cursor:pointer;margin-top:.4rem}
footer{opacity:.7;font-size:.85rem;margin-top:2rem}
@media (max-width:40rem){.wide{display:none}th,td{padding:.25rem .3rem}}
"""

_PHASE_COLOURS = {
    "smtp_connect": "#54aeff",
    "smtp_tls": "#0969da",
    "smtp_auth": "#0550ae",
    "smtp_send": "#033d8b",
    "imap_connect": "#d2a8ff",
    "imap_tls": "#a475f9",
    "imap_auth": "#8250df",
    "imap_select": "#6639ba",
    "delivery": "#2da44e",
    "imap_fetch": "#bf8700",
    "imap_cleanup": "#9a6700",
}


def _when(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "never"
    ago = max(0.0, now - timestamp)
    if ago < 90:
        text = f"{ago:.0f}s ago"
    elif ago < 5400:
        text = f"{ago / 60:.0f}m ago"
    elif ago < 172800:
        text = f"{ago / 3600:.1f}h ago"
    else:
        text = f"{ago / 86400:.1f}d ago"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    return f'<time datetime="{stamp}" title="{stamp}">{text}</time>'


def _seconds(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _bar(phases: dict[str, float]) -> str:
    total = sum(phases.values()) or 1.0
    spans = "".join(
        f'<span style="width:{seconds / total * 100:.1f}%;background:'
        f'{_PHASE_COLOURS.get(phase, "#888")}" title="{phase} {_seconds(seconds)}"></span>'
        for phase, seconds in phases.items()
    )
    return f'<div class="bar" aria-hidden="true">{spans}</div>'


def _backoff(result: dict[str, Any], now: float) -> str:
    if result.get("backoff_since") is None:
        return ""
    next_try = time.strftime("%H:%M:%S UTC", time.gmtime(result["backoff_until"]))
    return (
        f'<div class="backoff">Logins held back since {_when(result["backoff_since"], now)} '
        f"(lock-out guard); next try {next_try}</div>"
    )


def _why(result: dict[str, Any] | None) -> str:
    if not result or result["success"]:
        return ""
    detail = (
        f'<div class="detail">{html.escape(result["detail"])}</div>' if result["detail"] else ""
    )
    return (
        f'<span class="why">{html.escape(str(result["reason"]))} in '
        f"{html.escape(str(result['phase']))}</span>{detail}"
    )


def _provider_note(target: dict[str, Any], now: float) -> str:
    """Open incidents of the target's provider, or that its status page shows none."""
    status, e = target.get("provider_status"), html.escape
    if status is None:
        return ""
    provider = e(str(target["provider"]))
    if not status["incidents"]:
        read = _when(status["last_success"], now) if status["last_success"] else "not yet read"
        return (
            f'<div class="calm">No open incident on {provider}\'s status page (read {read})</div>'
        )
    return "".join(
        f'<div class="incident" data-incident="{e(i["incident"])}">{provider} reports '
        f"<b>{e(i['incident'])}</b> ({e(i['service'])}, {e(i['classification'])}, "
        f"{e(i['status'])}), started {_when(i['start'], now)}"
        f"{': ' + e(i['title']) if i['title'] else ''}</div>"
        for i in status["incidents"]
    )


MAX_NOTES = 3
"""Silences shown per target (the latest to end first); the JSON has all of them."""


def _until(ends: float, now: float) -> str:
    """``HH:MM UTC`` today, with the date on any other day."""
    day = "%Y-%m-%d " if time.gmtime(ends)[:3] != time.gmtime(now)[:3] else ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ends))
    return f'<time datetime="{stamp}">{time.strftime(day + "%H:%M UTC", time.gmtime(ends))}</time>'


def _maintenance_note(target: dict[str, Any], now: float) -> str:
    """Planned maintenance: the silences that keep this target's alerts from paging."""
    e = html.escape
    return "".join(
        f'<div class="maint" data-silence="{e(n["silence"])}">Planned maintenance until '
        f"{_until(n['ends'], now)}{' (' + e(n['comment']) + ')' if n['comment'] else ''}</div>"
        for n in target.get("maintenance", [])[:MAX_NOTES]
    )


def _target(target: dict[str, Any], now: float) -> str:
    e = html.escape
    rows = []
    for check in target["checks"]:
        last = check["last"]
        delivery = last["delivery_seconds"] if last else None
        rows.append(
            f'<tr class="{check["state"]}" data-check="{e(check["check"])}">'
            f"<td>{e(check['check'])}{_strip(check['history'], now)}"
            f"{_sparkline(check['history'])}</td>"
            f'<td><span class="badge">{e(check["state"])}</span></td>'
            f'<td class="wide">{_when(check["since"], now) if check["since"] else NONE}</td>'
            f'<td class="wide">{_when(check["last_success"], now)}</td>'
            f"<td>{(_why(last) + _backoff(last, now) or _seconds(delivery)) if last else NONE}"
            "</td></tr>"
        )
    recent = "".join(
        f'<tr class="{"up" if r["success"] else "down"}">'
        f"<td>{_when(r['started'], now)}</td><td>{e(r['check'])}</td>"
        f'<td><span class="badge">{"ok" if r["success"] else "failed"}</span></td>'
        f"<td>{_seconds(r['duration_seconds'])}</td>"
        f'<td class="wide">{_bar(r["phases"])}<div class="phases">'
        + ", ".join(f"{e(p)} {_seconds(s)}" for p, s in r["phases"].items())
        + f"</div>{_why(r)}</td></tr>"
        for r in target["recent"][:10]
    )
    delivery = _seconds(target["last_delivery_seconds"])
    maint = ' <span class="badge maint">maintenance</span>' if target.get("maintenance") else ""
    return (
        f'<section class="target {target["state"]}" id="target-{e(target["name"])}" '
        f'data-target="{e(target["name"])}">'
        f'<h2>{e(target["name"])} <span class="badge">{e(target["state"])}</span>'
        f"{maint}</h2>"
        f"{_maintenance_note(target, now)}"
        f"<div>Last delivery time: <b>{delivery}</b></div>"
        f"{_provider_note(target, now)}"
        '<div class="scroll"><table><thead><tr><th>Check</th><th>State</th>'
        '<th class="wide">Since</th><th class="wide">Last success</th>'
        "<th>Reason / delivery time</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        '<details><summary>Recent probes</summary><div class="scroll"><table><thead><tr>'
        "<th>When</th>"
        '<th>Check</th><th>Result</th><th>Duration</th><th class="wide">Phases</th></tr>'
        f"</thead><tbody>{recent}</tbody></table></div></details></section>"
    )


STRIP_CELL = 8
"""Width of one outcome in the strip (px); 2 more between outcomes."""
SPARK_WIDTH, SPARK_HEIGHT = 150, 24


def _strip(history: list[dict[str, Any]], now: float) -> str:
    """The last outcomes as a row of coloured cells, oldest first; each says when and why on
    hover, and the row says it in words for screen readers."""
    if not history:
        return ""
    cells = []
    for index, outcome in enumerate(history):
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime(outcome["ended"]))
        what = "ok" if outcome["success"] else f"{outcome['reason']} in {outcome['phase']}"
        kind = "ok" if outcome["success"] else "failed"
        cells.append(
            f'<rect class="{kind}" x="{index * (STRIP_CELL + 2)}" y="0" width="{STRIP_CELL}" '
            f'height="14" rx="2"><title>{stamp}: {html.escape(what)}</title></rect>'
        )
    failed = [o for o in history if not o["success"]]
    reasons = sorted({str(o["reason"]) for o in failed})
    words = f"last {len(history)} probes: {len(history) - len(failed)} ok, {len(failed)} failed" + (
        f" ({', '.join(reasons)})" if reasons else ""
    )
    width = len(history) * (STRIP_CELL + 2)
    return (
        f'<div class="strip"><svg role="img" aria-label="{html.escape(words)}" '
        f'width="{width}" height="14" viewBox="0 0 {width} 14">{"".join(cells)}</svg>'
        f'<span class="sr">{html.escape(words)}</span></div>'
    )


def _sparkline(history: list[dict[str, Any]]) -> str:
    """Delivery times of the last round trips as a line, with its range in words."""
    times = [o["delivery_seconds"] for o in history if o["delivery_seconds"] is not None]
    if len(times) < 2:
        return ""
    low, high = min(times), max(times)
    span = (high - low) or 1.0
    step = SPARK_WIDTH / (len(times) - 1)
    points = " ".join(
        f"{i * step:.1f},{SPARK_HEIGHT - 2 - (t - low) / span * (SPARK_HEIGHT - 4):.1f}"
        for i, t in enumerate(times)
    )
    words = f"delivery time of the last {len(times)}: {_plain(low)} to {_plain(high)}"
    return (
        f'<div class="spark"><svg role="img" aria-label="{html.escape(words)}" '
        f'width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" viewBox="0 0 {SPARK_WIDTH} '
        f'{SPARK_HEIGHT}"><polyline points="{points}"/></svg>'
        f"<span>{_plain(low)}&#8211;{_plain(high)}</span></div>"
    )


def _plain(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _headline(targets: list[dict[str, Any]]) -> tuple[str, str]:
    """The summary line, in words that read well for one mailbox and for many."""
    down = [t["name"] for t in targets if t["state"] == "down"]
    planned = {t["name"] for t in targets if t.get("maintenance")}
    names = ", ".join(
        html.escape(n) + (" (planned maintenance)" if n in planned else "") for n in down
    )
    if down and len(targets) == 1:
        return "down", f"Mailbox {names} is failing"
    if down:
        return "down", f"{len(down)} of {len(targets)} mailboxes failing: {names}"
    if any(t["state"] == "pending" for t in targets):
        return "pending", "Waiting for the first probes"
    if len(targets) == 1:
        return "up", f"Mailbox {html.escape(targets[0]['name'])} is working"
    return "up", f"All {len(targets)} mailboxes working"


def _where(location: dict[str, Any] | None) -> str:
    """Which location this page sees from, and links to the other locations' pages."""
    if location is None:
        return ""
    e = html.escape
    peers = "".join(
        f'<a href="{e(p["url"])}" data-location="{e(p["name"])}">{e(p["name"])}</a>'
        for p in location["peers"]
    )
    others = f" Other locations: {peers}" if peers else ""
    return (
        f'<p class="where" id="location" data-location="{e(location["name"])}">'
        f"What the probes see from <b>{e(location['name'])}</b>.{others}</p>"
    )


def _silences_note(maintenance: dict[str, Any] | None, now: float) -> str:
    """Whether the silences shown are current: Alertmanager read, or why not."""
    if maintenance is None:
        return ""
    e = html.escape
    if maintenance["error"]:
        since = _when(maintenance["failing_since"], now)
        return (
            '<p class="why" id="maintenance-error">Planned maintenance unknown: Alertmanager '
            f"not read since {since} ({e(maintenance['error'])}).</p>"
        )
    if maintenance["left_out"]:
        return (
            f'<p class="calm" id="maintenance-left-out">{maintenance["left_out"]} silences '
            f"could not be evaluated ({e(str(maintenance['why_left_out']))}).</p>"
        )
    return ""


def render(data: dict[str, Any]) -> str:
    """The status page for a :func:`snapshot`."""
    now = data["generated"]
    targets = data["targets"]
    overall, headline = _headline(targets)
    reload_note = (
        ""
        if data["config_reload_successful"]
        else (
            '<p class="why">The last configuration reload failed: the previous configuration is '
            "in use.</p>"
        )
    )
    sections = "".join(_target(t, now) for t in targets)
    location = data.get("location")
    where_title = f" from {html.escape(location['name'])}" if location else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>{"Mail failing" if overall == "down" else "Mail status"}{where_title} ·
mailbox-exporter</title>
<style>{_CSS}</style></head>
<body>
<h1>Mailbox status{where_title}</h1>
{_where(location)}
<div class="summary {overall}" id="summary">{headline}</div>
{reload_note}
{_silences_note(data.get("maintenance"), now)}
{sections}
<footer>mailbox-exporter {html.escape(data["version"])} ·
<a href="metrics">Metrics</a> · <a href="api/v1/status">JSON</a> ·
<a href="-/healthy">Health</a> · refreshes every {REFRESH_SECONDS}s ·
{time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))}</footer>
</body></html>
"""
