"""`openai` instrumented twice at once: OpenInference (openinference-instrumentation-openai)
and the OpenTelemetry contrib GenAI instrumentation (opentelemetry-instrumentation-openai-v2),
as a team moving from one to the other has it. Every call then arrives as two nested spans of
two instrumentation scopes; each must count once (docs/ingestion.md, "A call instrumented
twice"). User and session come from OpenInference's `using_attributes`, so its spans are the
richer ones."""

import common
import openai_calls
from openinference.instrumentation import using_attributes
from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInference
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as GenAI

provider = common.tracer_provider()
GenAI().instrument(tracer_provider=provider)
OpenInference().instrument(tracer_provider=provider)
openai_calls.run(lambda who: using_attributes(user_id=who[0], session_id=who[1]))
common.done(provider)
