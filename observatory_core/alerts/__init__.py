"""Threshold alerts (README "Alerts and the live view"): rules, the state machine, evaluation, webhooks."""
