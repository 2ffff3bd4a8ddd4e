"""Webhook channel: a Slack-compatible JSON body, sent by its own loop with a timeout and
retries with backoff; every attempt is kept as the rule's delivery log. Targets inside the
server's own network are refused (`alerts.egress`), at rule save time and again on sending.

The one sender of the server: a repeating export's "file is ready" message is queued here
too (`queue_delivery`, naming its schedule instead of a rule) and sent by the same loop."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.alerts.egress import AllowList, Refused, check_target, post_pinned
from observatory_core.base import prometheus
from observatory_core.storage.schema import alert_rules, webhook_deliveries

log = logging.getLogger("observatory.alerts")
TIMEOUT_S = 5.0
MAX_ATTEMPTS = 5
BACKOFF_S = 5.0  # 5, 10, 20, 40 seconds between attempts
LEASE = timedelta(seconds=60)  # a claimed delivery is not picked up again meanwhile
COLORS = {"firing": "#d93f0b", "resolved": "#2da44e"}
Post = Callable[[str, bytes, float], int]


def condition(rule: dict, usual: float | None = None) -> str:
    """The rule's condition in words: "> 2,500", or "above usual (1,234), 3 deviations, 4
    weeks" for an anomaly rule."""
    if rule.get("kind") != "anomaly":
        return f"{rule['comparator']} {rule['threshold']:,.4g}"
    seen = "" if usual is None else f" ({usual:,.4g})"
    return (
        f"{rule['direction']} usual{seen}, {rule['sensitivity']:g} deviations, "
        f"{rule['baseline_weeks']} weeks"
    )


def body(
    rule: dict,
    group: str,
    state: str,
    value: float | None,
    at: datetime,
    usual: float | None = None,
) -> dict:
    """What a Slack incoming webhook shows (text, attachment), plus the same facts as data.
    `usual`: an anomaly rule's baseline median at the time."""
    shown = "no data" if value is None else f"{value:,.4g}"
    where = f" [{rule['group_by']}={group}]" if group else ""
    icon = ":red_circle:" if state == "firing" else ":large_green_circle:"
    text = (
        f"{icon} {state.upper()}: {rule['name']}{where}: {rule['series']} = {shown} "
        f"({condition(rule, usual)} over {rule['window_s'] // 60} min)"
    )
    return {
        "text": text,
        "attachments": [
            {
                "color": COLORS.get(state, "#888888"),
                "fields": [
                    {"title": "Value", "value": shown, "short": True},
                    {
                        "title": "Condition",
                        "value": condition(rule, usual),
                        "short": True,
                    },
                ],
                "ts": int(at.timestamp()),
            }
        ],
        "alert": {
            "rule_id": rule["id"],
            "rule": rule["name"],
            "group": group or None,
            "state": state,
            "series": rule["series"],
            "value": value,
            "comparator": rule["comparator"],
            "threshold": rule["threshold"],
            "window_s": rule["window_s"],
            "kind": rule.get("kind") or "threshold",
            "usual": usual,
            "at": at.isoformat(),
        },
    }


def queue_delivery(
    conn: Connection, org_id: int, url: str, message: dict, now: datetime, **subject: int
) -> None:
    """Queue a POST of `message` in the caller's transaction (sent by `deliver_due`, at least
    once); `subject`: rule_id and event_id for an alert, schedule_id for a repeating export."""
    conn.execute(
        webhook_deliveries.insert().values(
            org_id=org_id,
            url=url,
            body=json.dumps(message),
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            **subject,
        )
    )


def allow_list() -> AllowList:
    """The admin's allowed internal hosts (read per use, so tests and restarts see changes)."""
    from observatory_core.base.settings import get_settings

    return AllowList.parse(get_settings().webhook_allow_hosts)


def http_post(url: str, data: bytes, timeout: float) -> int:
    """POST to a checked, pinned address. A refused target or a redirect raises `Refused`:
    sending again would not help, so the delivery fails at once with the reason."""
    status, location = post_pinned(check_target(url, allow_list()), data, timeout)
    if 300 <= status < 400:
        raise Refused(
            f"The receiver answered HTTP {status}, a redirect to {(location or '?')[:120]}; "
            "redirects are not followed, so set the webhook URL to the final address."
        )
    return status


def deliver_due(
    engine: Engine, now: datetime | None = None, *, post: Post = http_post, limit: int = 20
) -> int:
    """Send what is due; returns how many were attempted. Each is claimed first (a lease), so
    several workers never send the same delivery twice at once."""
    now = now or datetime.now(UTC)
    d = webhook_deliveries.c
    with engine.connect() as conn:
        due = conn.execute(
            select(d.id, d.url, d.body, d.attempts, d.next_attempt_at)
            .where(d.status == "pending", d.next_attempt_at <= now)
            .order_by(d.next_attempt_at)
            .limit(limit)
        ).all()
    attempted = 0
    for row in due:
        with engine.begin() as conn:
            claimed = conn.execute(
                update(webhook_deliveries)
                .where(
                    d.id == row.id, d.next_attempt_at == row.next_attempt_at, d.status == "pending"
                )
                .values(next_attempt_at=now + LEASE)
            ).rowcount
        if not claimed:
            continue
        attempted += 1
        code, error, final = None, None, False
        try:
            code = post(row.url, row.body.encode(), TIMEOUT_S)
        except Refused as exc:  # an internal target or a redirect: retrying cannot help
            error, final = str(exc)[:300], True
            log.warning("webhook delivery %s not sent: %s", row.id, exc)
        except Exception as exc:  # timeouts, refused connections, DNS: all retried
            error = f"{type(exc).__name__}: {exc}"[:300]
        attempts = row.attempts + 1
        ok = code is not None and 200 <= code < 300
        if ok:
            values = {"status": "delivered", "finished_at": datetime.now(UTC)}
        elif attempts >= MAX_ATTEMPTS or final:
            values = {"status": "failed", "finished_at": datetime.now(UTC)}
        else:
            values = {"next_attempt_at": now + timedelta(seconds=BACKOFF_S * 2 ** (attempts - 1))}
        if code is not None and not ok:
            error = f"HTTP {code}"
        outcome = "delivered" if ok else "refused" if final else values.get("status", "retry")
        prometheus.WEBHOOKS.labels(outcome).inc()
        with engine.begin() as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(d.id == row.id)
                .values(attempts=attempts, last_status_code=code, last_error=error, **values)
            )
    return attempted


def delivery_log(engine: Engine, scope: Scope, rule_id: int, limit: int = 50) -> list[dict]:
    scope.require(Permission.ALERTS_READ)
    d = webhook_deliveries.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                d.id,
                d.status,
                d.attempts,
                d.last_status_code,
                d.last_error,
                d.created_at,
                d.finished_at,
                d.next_attempt_at,
            )
            .select_from(webhook_deliveries.join(alert_rules, alert_rules.c.id == d.rule_id))
            .where(d.rule_id == rule_id, alert_rules.c.org_id == scope.org_id)
            .order_by(d.id.desc())
            .limit(limit)
        ).mappings()
        return [dict(r) for r in rows]
