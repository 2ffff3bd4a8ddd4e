"""`openai` + OpenLLMetry (opentelemetry-instrumentation-openai). The user goes in OpenAI's own
`user` field (sent as `gen_ai.user`); the session as a Traceloop association property, put on
each span the way the Traceloop SDK does (the instrumentation alone has no session)."""

from contextlib import contextmanager

import common
import openai_calls
from opentelemetry.instrumentation.openai import OpenAIInstrumentor

props = common.Attributes()
provider = common.tracer_provider(props)
OpenAIInstrumentor().instrument(tracer_provider=provider)


@contextmanager
def as_user(who):
    props.values = {"traceloop.association.properties.session_id": who[1]}
    yield
    props.values = {}


openai_calls.run(as_user, send_user=True)
common.done(provider)
