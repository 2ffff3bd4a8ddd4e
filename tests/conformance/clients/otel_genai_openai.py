"""`openai` + the OpenTelemetry contrib GenAI instrumentation (opentelemetry-instrumentation-
openai-v2), latest GenAI conventions with message content on spans. It has no user or session:
the app puts `user.id` / `session.id` on the spans (as OpenTelemetry's baggage processor does)."""

from contextlib import contextmanager

import common
import openai_calls
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

props = common.Attributes()
provider = common.tracer_provider(props)
OpenAIInstrumentor().instrument(tracer_provider=provider)


@contextmanager
def as_user(who):
    props.values = {"user.id": who[0], "session.id": who[1]}
    yield
    props.values = {}


openai_calls.run(as_user)
common.done(provider)
