"""LangChain (`langchain-openai`) + OpenInference (openinference-instrumentation-langchain):
alice runs a prompt | model | parser chain and a streamed call; bob runs a chain that calls the
model, runs the tool it asked for, and calls the model again (chain > LLM, tool, LLM), then two
failing calls. User and session through OpenInference's `using_attributes`."""

import common
from langchain_core.messages import HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from openinference.instrumentation import using_attributes
from openinference.instrumentation.langchain import LangChainInstrumentor

provider = common.tracer_provider()
LangChainInstrumentor().instrument(tracer_provider=provider)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


llm = ChatOpenAI(
    model=common.CHAT_MODEL,
    base_url=common.API,
    api_key="sk-conformance",
    max_retries=0,
    timeout=20,
    stream_usage=True,
)


def weather_agent(question: str) -> str:
    with_tools = llm.bind_tools([get_weather])
    messages = [HumanMessage(question)]
    asked = with_tools.invoke(messages)
    messages.append(asked)
    for call in asked.tool_calls:
        messages.append(get_weather.invoke(call))
    return with_tools.invoke(messages).content


with using_attributes(user_id=common.ALICE[0], session_id=common.ALICE[1]):
    prompt = ChatPromptTemplate.from_messages([("system", "You are terse."), ("user", "{q}")])
    answer = (prompt | llm | StrOutputParser()).invoke({"q": common.QUESTION})
    assert answer == "Paris is the capital of France.", answer
    streamed = "".join(c.content for c in llm.stream(common.STREAM_QUESTION))
    assert streamed == "Bonjour from Paris.", streamed
with using_attributes(user_id=common.BOB[0], session_id=common.BOB[1]):
    answer = RunnableLambda(weather_agent).invoke(common.TOOL_QUESTION)
    assert answer == "It is sunny in Paris.", answer
    OpenAIEmbeddings(
        model=common.EMBEDDING_MODEL,
        base_url=common.API,
        api_key="sk-conformance",
        max_retries=0,
        check_embedding_ctx_length=False,  # else tiktoken downloads its encoding
    ).embed_query(common.EMBED_TEXT)
    common.expect_error(lambda: llm.invoke(common.FAIL_429), 429)
    common.expect_error(lambda: llm.invoke(common.FAIL_500), 500)
common.done(provider)
