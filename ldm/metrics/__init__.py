"""Metrics on callables and tensors (never on model classes)."""
