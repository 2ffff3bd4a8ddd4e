"""Live demo traffic: the OpenTelemetry SDK's own OTLP/HTTP exporter sends agent traces to
this server's `/v1/traces`, so the live view and the alerts move in the embedded demo.

The spans travel the same road as a customer's (API key, decoding, mapping, group commit);
every few minutes an error burst makes an alert worth watching.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from observatory_core.demo.catalog import MODELS, ORGS
from observatory_core.demo.generator import customer_ids, pick_user, user_weights
from observatory_core.demo.texts import answer, question

log = logging.getLogger("observatory.demo")
CHAT_MODELS = ("claude-sonnet-4-5", "gpt-4o", "gpt-4o-mini", "gemini-2.5-flash")
BURST_EVERY_S = 300.0  # an error burst starts every 5 minutes ...
BURST_LENGTH_S = 45.0  # ... and lasts 45 seconds
BURST_ERROR_RATE = 0.6


def _messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


class DemoTraffic:
    """About `spans_per_s` spans per second (agent traces of 3 spans) until `stop()`."""

    def __init__(self, endpoint: str, api_key: str, spans_per_s: float, seed: int | None = None):
        self.rng = random.Random(seed)
        self.spans_per_s = spans_per_s
        # the same customers and the same power law as the loaded history, so live traffic
        # does not inflate "unique users" (uniform ids would all be new ones)
        org = next(o for o in ORGS if o.slug == DEMO_ORG)
        self.users, self.user_cum = customer_ids(org), user_weights(org)
        self.provider = TracerProvider(
            resource=Resource.create(
                {
                    "service.name": "support-bot-live",
                    "deployment.environment.name": "production",
                    "observatory.project": "support-bot",
                }
            )
        )
        self._exporter = OTLPSpanExporter(
            endpoint=endpoint, headers={"authorization": f"Bearer {api_key}"}, timeout=10
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(self._exporter, schedule_delay_millis=1000)
        )
        self.tracer = self.provider.get_tracer("observatory.demo.traffic")
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="observatory-demo", daemon=True)

    def start(self) -> DemoTraffic:
        self._thread.start()
        return self

    def in_burst(self) -> bool:
        elapsed = time.monotonic() - self._started - BURST_EVERY_S / 2
        return elapsed >= 0 and elapsed % BURST_EVERY_S < BURST_LENGTH_S

    def emit_trace(self) -> None:
        """One agent run: the agent span, one embedding call and one chat call."""
        rng = self.rng
        now = time.time_ns()
        profile = MODELS[rng.choice(CHAT_MODELS)]
        asked = question("agent_rag", rng)
        user = pick_user(rng, self.users, self.user_cum)
        embed_ms = rng.uniform(60, 200)
        chat_ms = profile.ttft_ms * rng.uniform(0.7, 1.8) + rng.uniform(200, 2500)
        total_ns = int((embed_ms + chat_ms + 30) * 1e6)
        root = self.tracer.start_span(
            "invoke_agent support-bot",
            start_time=now - total_ns,
            attributes={"gen_ai.operation.name": "invoke_agent", "user.id": user},
        )
        ctx = set_span_in_context(root)
        embed = self.tracer.start_span(
            "embeddings text-embedding-3-small",
            context=ctx,
            start_time=now - total_ns + 10_000_000,
            attributes={
                "gen_ai.operation.name": "embeddings",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": rng.randint(8, 60),
            },
        )
        embed.end(end_time=now - total_ns + 10_000_000 + int(embed_ms * 1e6))
        failed = rng.random() < (BURST_ERROR_RATE if self.in_burst() else profile.base_error_rate)
        chat = self.tracer.start_span(
            f"chat {profile.model}",
            context=ctx,
            start_time=now - int(chat_ms * 1e6) - 5_000_000,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": profile.provider,
                "gen_ai.request.model": profile.model,
                "gen_ai.usage.input_tokens": rng.randint(300, 2500),
                "gen_ai.usage.output_tokens": 0 if failed else rng.randint(40, 600),
                "gen_ai.input.messages": _messages("user", asked),
                "gen_ai.output.messages": _messages(
                    "assistant", "" if failed else answer("agent_rag", rng)
                ),
                "user.id": user,
                "session.id": f"sess_{rng.randint(1, 2000):04x}",
            },
        )
        if failed:
            chat.set_status(Status(StatusCode.ERROR, "Error code: 529 - overloaded"))
            chat.set_attribute("error.type", "OverloadedError")
        chat.end(end_time=now - 5_000_000)
        root.end(end_time=now)

    def _run(self) -> None:
        interval = 3.0 / self.spans_per_s  # three spans per trace
        while not self._stop.wait(self.rng.expovariate(1.0 / interval)):
            try:
                self.emit_trace()
            except Exception:  # demo traffic must never take the server down
                log.exception("demo traffic failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        # The server stops listening before it stops its background: the last batch has
        # nowhere to go, and flushing it retried against the closed port until the export's
        # timeout (~7 s of every shutdown). Demo spans only: dropped.
        self._exporter.shutdown()
        self.provider.shutdown()


DEMO_ORG = "acme"
DEMO_KEY_NAME = "demo traffic"


def start_demo_traffic(engine, spans_per_s: float, port: int) -> DemoTraffic | None:
    """Send demo traffic to this server with a fresh key (the previous one is revoked)."""
    from observatory_core.accounts.permissions import Role
    from observatory_core.accounts.scope import Scope
    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.base.errors import UserError
    from observatory_core.ingest.apikeys import create_key, list_keys, revoke_key

    try:
        with engine.connect() as conn:
            org_id = org_id_by_slug(conn, DEMO_ORG)
    except UserError:
        log.info("no demo org %r: demo traffic stays off", DEMO_ORG)
        return None
    system = Scope(org_id, Role.ADMIN, username="system")
    for key in list_keys(engine, system):
        if key["name"] == DEMO_KEY_NAME and key["revoked_at"] is None:
            revoke_key(engine, system, key["id"])
    key = create_key(engine, system, DEMO_KEY_NAME)
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    log.info("demo traffic: %.1f spans/s to %s", spans_per_s, endpoint)
    return DemoTraffic(endpoint, key, spans_per_s).start()
