"""The managers' and on-call figures built from metrics and rollups: the home page summary,
the Overview (a period against the one before), the significance tests, the live feed."""
