"""Curator DB Python client."""
