"""Threshold alerts (DESIGN.md section 5): rules, the state machine, evaluation, webhooks."""
