"""The ground floor: errors a person can act on, settings, and the operators' metrics.

Imports nothing else of ours, so every other package may import it.
"""
