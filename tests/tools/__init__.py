"""Helpers for the tests (tests/ is on sys.path: ``from tools.equivalents import ...``)."""
