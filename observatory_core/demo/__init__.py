"""Realistic demo data: what a company's LLM traffic looks like over a month."""
