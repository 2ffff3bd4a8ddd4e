"""Plausible prompts and answers per kind of project, filled from small templates."""

from __future__ import annotations

import random

PRODUCTS = [
    "Orbit X2 headphones",
    "Nimbus router",
    "Atlas standing desk",
    "Pulse watch",
    "Vela kettle",
]
TOPICS = [
    "billing",
    "SSO setup",
    "webhooks",
    "rate limits",
    "data retention",
    "API keys",
    "exports",
]
LANGS = ["Python", "TypeScript", "Go", "Rust", "SQL"]
SUBJECTS = ["Q3 roadmap review", "incident retro", "pricing sync", "hiring plan", "customer call"]

QUESTIONS = {
    "agent_rag": [
        "Where is my order #{n}? It was supposed to arrive on {day}.",
        "I want to return the {product}, it stopped working after {k} days.",
        "Can you change the shipping address for order #{n}?",
        "Why was I charged twice for the {product}?",
        "How do I reset my {product} to factory settings?",
    ],
    "rag": [
        "How do I configure {topic} for our workspace?",
        "What are the limits on {topic} in the enterprise plan?",
        "Is there an API to automate {topic}?",
        "Explain the difference between {topic} and {topic2}.",
    ],
    "agent_tools": [
        "Fix the failing test in {lang} module billing/{n}.py and explain the cause.",
        "Refactor the {topic} handler to remove the duplicated retry logic.",
        "Research the market size for {product}s in Europe and cite sources.",
        "Write a {lang} function that parses the audit log and counts errors per hour.",
    ],
    "single": [
        "Write a short follow-up email to a prospect interested in the {product}.",
        "Summarize the meeting notes from the {subject}: {k} attendees, 45 minutes.",
        "Draft a polite reminder about invoice #{n} which is {k} days overdue.",
        "Summarize this transcript of the {subject} in five bullet points.",
    ],
}

ANSWERS = {
    "agent_rag": [
        "Your order #{n} left our warehouse yesterday and should arrive within {k} business days.",
        "I have opened return case RMA-{n} for the {product}; a prepaid label is on its way.",
        "I found two charges; one is a pre-authorization that will drop off within {k} days.",
        "Hold the power button for 10 seconds until the light blinks, then release.",
    ],
    "rag": [
        "To configure {topic}, open Settings > Workspace > {topic} and follow the three steps.",
        "The enterprise plan allows up to {n} requests per minute for {topic}.",
        "Yes: the REST endpoint /v2/{topic2} supports automation with an admin token.",
    ],
    "agent_tools": [
        "The test failed because the fixture reused a closed connection; I patched it.",
        "I extracted the retry policy into one helper and removed {k} copies of it.",
        "Estimated market: EUR {k}.{n} bn in 2026, growing 8% a year (sources: 3 reports).",
    ],
    "single": [
        "Hi Sam, thanks for your interest in the {product}. Would Tuesday suit for a demo?",
        "- Decision: ship {topic} in Q3\n- Owner: Dana\n- Risk: staffing\n- Next: review in 2 weeks",
        "Friendly reminder: invoice #{n} is now {k} days past due. Let us know if anything is unclear.",
    ],
}

TOOL_RESULTS = {
    "lookup_order": '{{"order": "{n}", "status": "in_transit", "eta_days": {k}}}',
    "create_ticket": '{{"ticket": "T-{n}", "queue": "returns"}}',
    "refund_status": '{{"refund": "R-{n}", "state": "pending"}}',
    "read_file": '{{"path": "billing/{n}.py", "lines": {k}0}}',
    "run_tests": '{{"passed": {n}, "failed": {k}}}',
    "grep_repo": '{{"matches": {k}}}',
    "apply_patch": '{{"files_changed": {k}}}',
    "web_search": '{{"results": {k}, "top": "https://example.org/report-{n}"}}',
    "fetch_page": '{{"bytes": {n}{k}}}',
    "sql_query": '{{"rows": {n}}}',
}


def _fill(template: str, rng: random.Random) -> str:
    topic, topic2 = rng.sample(TOPICS, 2)
    return template.format(
        n=rng.randint(1000, 99999),
        k=rng.randint(2, 9),
        day=rng.choice(["Monday", "Tuesday", "Friday"]),
        product=rng.choice(PRODUCTS),
        topic=topic,
        topic2=topic2,
        lang=rng.choice(LANGS),
        subject=rng.choice(SUBJECTS),
    )


def question(kind: str, rng: random.Random) -> str:
    return _fill(rng.choice(QUESTIONS[kind]), rng)


def answer(kind: str, rng: random.Random) -> str:
    return _fill(rng.choice(ANSWERS[kind]), rng)


def tool_io(tool: str, rng: random.Random) -> tuple[str, str]:
    args = f'{{"tool": "{tool}", "id": {rng.randint(1, 9999)}}}'
    return args, _fill(TOOL_RESULTS[tool], rng)
