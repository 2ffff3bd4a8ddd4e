"""`openai` + OpenInference (openinference-instrumentation-openai); user and session through
OpenInference's own `using_attributes`."""

import common
import openai_calls
from openinference.instrumentation import using_attributes
from openinference.instrumentation.openai import OpenAIInstrumentor

provider = common.tracer_provider()
OpenAIInstrumentor().instrument(tracer_provider=provider)
openai_calls.run(lambda who: using_attributes(user_id=who[0], session_id=who[1]))
common.done(provider)
