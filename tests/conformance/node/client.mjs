// The Vercel AI SDK client of the conformance suite: `ai` + `@ai-sdk/openai` with
// experimental_telemetry, exported by the OTel Node SDK's own OTLP/HTTP exporter to our receiver.
// Environment: CONFORMANCE_OTLP, CONFORMANCE_KEY, CONFORMANCE_API, OTEL_SERVICE_NAME.
// User and session go in telemetry metadata (ai.telemetry.metadata.userId / sessionId).
import { embed, generateText, jsonSchema, streamText, tool, stepCountIs } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";

const exporter = new OTLPTraceExporter({
  url: process.env.CONFORMANCE_OTLP,
  headers: { Authorization: `Bearer ${process.env.CONFORMANCE_KEY}` },
});
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({
    "service.name": process.env.OTEL_SERVICE_NAME,
    "deployment.environment.name": "conformance",
  }),
  spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 200 })],
});
provider.register();

const openai = createOpenAI({ baseURL: process.env.CONFORMANCE_API, apiKey: "sk-conformance" });
const model = openai.chat("gpt-4o-mini");
const telemetry = (user, session) => ({
  isEnabled: true,
  functionId: "conformance",
  metadata: { userId: user, sessionId: session },
});
const ALICE = telemetry("user-alice", "session-alice");
const BOB = telemetry("user-bob", "session-bob");

async function expectError(promise, status) {
  try {
    await promise;
  } catch (err) {
    const code = err.statusCode ?? err.lastError?.statusCode;
    if (code !== status) throw new Error(`expected HTTP ${status}, got ${code}: ${err}`);
    return;
  }
  throw new Error(`the call did not fail with HTTP ${status}`);
}

const chat = await generateText({
  model,
  system: "You are terse.",
  prompt: "What is the capital of France?",
  maxRetries: 0,
  experimental_telemetry: ALICE,
});
if (chat.text !== "Paris is the capital of France.") throw new Error(chat.text);

const stream = streamText({
  model,
  prompt: "Say hello from Paris.",
  maxRetries: 0,
  experimental_telemetry: ALICE,
});
let streamed = "";
for await (const piece of stream.textStream) streamed += piece;
if (streamed !== "Bonjour from Paris.") throw new Error(streamed);

const weather = await generateText({
  model,
  prompt: "What is the weather in Paris?",
  tools: {
    get_weather: tool({
      description: "The weather in a city",
      inputSchema: jsonSchema({
        type: "object",
        properties: { city: { type: "string" } },
        required: ["city"],
      }),
      execute: async ({ city }) => ({ sky: "sunny", city }),
    }),
  },
  stopWhen: stepCountIs(2),
  maxRetries: 0,
  experimental_telemetry: BOB,
});
if (weather.text !== "It is sunny in Paris.") throw new Error(weather.text);

await embed({
  model: openai.embedding("text-embedding-3-small"),
  value: "The capital of France",
  maxRetries: 0,
  experimental_telemetry: BOB,
});
for (const [text, status] of [["Please answer FAIL_429", 429], ["Please answer FAIL_500", 500]]) {
  await expectError(
    generateText({ model, prompt: text, maxRetries: 0, experimental_telemetry: BOB }),
    status,
  );
}
await provider.forceFlush();
await provider.shutdown();
console.log(JSON.stringify({ flushed: true }));
