"""Saved dashboards (issue 20 part 1): the model and its JSON form, storage per org, and each chart's numbers through the metrics engine."""
