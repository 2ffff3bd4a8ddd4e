"""Live demo traffic draws its users like the loaded history: the same customers, a power law."""

from collections import Counter

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observatory_core.demo.catalog import ORGS
from observatory_core.demo.generator import customer_ids
from observatory_core.demo.traffic import DemoTraffic


def test_live_users_are_the_historys_customers_drawn_by_the_same_power_law():
    traffic = DemoTraffic("http://127.0.0.1:9/v1/traces", "key", 1.0, seed=3)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    traffic.tracer = provider.get_tracer("test")
    for _ in range(2000):
        traffic.emit_trace()
    users = [
        s.attributes["user.id"] for s in memory.get_finished_spans() if "user.id" in s.attributes
    ]
    traffic.provider.shutdown()
    acme = next(o for o in ORGS if o.slug == "acme")
    known = set(customer_ids(acme))
    assert len(users) == 4000 and set(users) <= known  # the agent and the chat span
    per_trace = Counter(users[::2])
    # the power law 1/(rank+1)^1.1: the first customer's expected share of the traces
    weights = [1 / (r + 1) ** 1.1 for r in range(acme.users)]
    expected_top = weights[0] / sum(weights)
    top_user, top_count = per_trace.most_common(1)[0]
    assert top_user == customer_ids(acme)[0]
    assert abs(top_count / 2000 - expected_top) < 0.35 * expected_top
    # uniform draws over 400 ids would touch ~395 of them; a power law far fewer
    assert len(per_trace) < 0.8 * min(acme.users, 2000)
