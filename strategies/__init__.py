"""Aggregation strategies, as plain functions on arrays where possible."""
