"""Comparison providers for the benchmark (never part of the rest_auth_provider package)."""
