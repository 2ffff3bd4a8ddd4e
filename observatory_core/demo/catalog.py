"""What the demo company runs: orgs, projects, models and how each model behaves.

Latency figures are medians in the range public benchmarks report for these models; they
only need to be plausible and distinct so charts by model look like real ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ModelProfile:
    provider: str
    model: str
    ttft_ms: float  # median time to first token (or whole call, for embeddings)
    tokens_per_s: float  # output speed; 0 for embeddings
    base_error_rate: float = 0.008


MODELS = {
    m.model: m
    for m in [
        ModelProfile("openai", "gpt-4o", 450, 85),
        ModelProfile("openai", "gpt-4o-mini", 300, 115),
        ModelProfile("openai", "gpt-4.1", 520, 75),
        ModelProfile("openai", "gpt-4.1-mini", 330, 105),
        ModelProfile("openai", "o3-mini", 2400, 130),
        ModelProfile("openai", "text-embedding-3-small", 110, 0),
        ModelProfile("anthropic", "claude-sonnet-4-5", 950, 62),
        ModelProfile("anthropic", "claude-haiku-4-5", 420, 120),
        ModelProfile("anthropic", "claude-opus-4-1", 1600, 38),
        ModelProfile("google", "gemini-2.5-flash", 380, 165),
        ModelProfile("google", "gemini-2.5-pro", 1250, 72),
        ModelProfile("mistral", "mistral-large-latest", 620, 55),
        ModelProfile("mistral", "mistral-small-latest", 280, 125),
        ModelProfile("mistral", "codestral-latest", 300, 140),
        ModelProfile("groq", "llama-3.3-70b-versatile", 190, 280),
        ModelProfile("groq", "llama-3.1-8b-instant", 90, 750),
        ModelProfile("cohere", "command-r-plus", 700, 50, 0.012),
        ModelProfile("cohere", "embed-v4.0", 140, 0),
        ModelProfile("deepseek", "deepseek-chat", 950, 45, 0.015),
        # A fine-tune on the company's own servers: not in any price table, so `unpriced`.
        ModelProfile("self-hosted", "acme-support-ft-v3", 260, 90, 0.01),
    ]
}


@dataclass(frozen=True)
class ProjectSpec:
    slug: str
    name: str
    kind: str  # single | rag | agent_rag | agent_tools
    weight: float
    chat_models: tuple[tuple[str, float], ...]
    embed_model: str | None = None
    tools: tuple[str, ...] = ()


@dataclass(frozen=True)
class OrgSpec:
    slug: str
    name: str
    weight: float
    users: int
    projects: tuple[ProjectSpec, ...]


ORGS = (
    OrgSpec(
        "acme",
        "Acme Corp",
        0.72,
        600,
        (
            ProjectSpec(
                "support-bot",
                "Customer Support Bot",
                "agent_rag",
                0.38,
                (
                    ("claude-sonnet-4-5", 0.4),
                    ("gpt-4o", 0.25),
                    ("gpt-4o-mini", 0.2),
                    ("acme-support-ft-v3", 0.15),
                ),
                "text-embedding-3-small",
                ("lookup_order", "create_ticket", "refund_status"),
            ),
            ProjectSpec(
                "code-assistant",
                "Code Assistant",
                "agent_tools",
                0.27,
                (
                    ("claude-sonnet-4-5", 0.35),
                    ("gpt-4.1", 0.2),
                    ("o3-mini", 0.12),
                    ("claude-opus-4-1", 0.05),
                    ("gemini-2.5-pro", 0.13),
                    ("codestral-latest", 0.15),
                ),
                None,
                ("read_file", "run_tests", "grep_repo", "apply_patch"),
            ),
            ProjectSpec(
                "doc-search",
                "Docs Search",
                "rag",
                0.22,
                (
                    ("gpt-4o-mini", 0.45),
                    ("gemini-2.5-flash", 0.3),
                    ("mistral-small-latest", 0.15),
                    ("claude-haiku-4-5", 0.1),
                ),
                "embed-v4.0",
            ),
            ProjectSpec(
                "sales-email",
                "Sales Email Writer",
                "single",
                0.13,
                (
                    ("gpt-4o-mini", 0.4),
                    ("claude-haiku-4-5", 0.3),
                    ("mistral-large-latest", 0.3),
                ),
            ),
        ),
    ),
    OrgSpec(
        "globex",
        "Globex Labs",
        0.28,
        150,
        (
            ProjectSpec(
                "research-agent",
                "Research Agent",
                "agent_tools",
                0.55,
                (
                    ("gemini-2.5-pro", 0.3),
                    ("claude-sonnet-4-5", 0.3),
                    ("deepseek-chat", 0.2),
                    ("llama-3.3-70b-versatile", 0.2),
                ),
                None,
                ("web_search", "fetch_page", "sql_query"),
            ),
            ProjectSpec(
                "summarizer",
                "Meeting Summarizer",
                "single",
                0.45,
                (
                    ("gpt-4.1-mini", 0.35),
                    ("gemini-2.5-flash", 0.3),
                    ("command-r-plus", 0.15),
                    ("llama-3.1-8b-instant", 0.2),
                ),
            ),
        ),
    ),
)

ENVIRONMENTS = (("production", 0.85), ("staging", 0.12), ("development", 0.03))


@dataclass(frozen=True)
class Incident:
    """A provider outage: more errors and slower calls for a while."""

    provider: str
    minutes: float
    error_rate: float
    latency_factor: float
    error_type: str
    error_message: str
    hours_before_end: float = 0.0  # a recent incident, relative to the end of the data
    days_before_end: int | None = None  # or: that many days back, at `at_hour` UTC
    at_hour: int = 14

    def start(self, end: datetime) -> datetime:
        if self.days_before_end is None:
            return end - timedelta(hours=self.hours_before_end)
        day = (end - timedelta(days=self.days_before_end)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        return day + timedelta(hours=self.at_hour)


INCIDENTS = (
    Incident(
        "anthropic",
        95,
        0.55,
        3.5,
        "overloaded_error",
        "Anthropic API returned 529: Overloaded",
        days_before_end=8,
    ),
    Incident(
        "openai",
        40,
        0.18,
        4.0,
        "APITimeoutError",
        "Request timed out after 30s (openai.APITimeoutError)",
        hours_before_end=3.5,
    ),
)

ORDINARY_ERRORS = (
    ("RateLimitError", "Error code: 429 - rate limit reached for requests", 0.45),
    (
        "InternalServerError",
        "Error code: 500 - the server had an error processing your request",
        0.25,
    ),
    ("APIConnectionError", "Connection error: peer closed connection without response", 0.15),
    ("BadRequestError", "Error code: 400 - context length exceeded for this model", 0.15),
)
