"""Versioned, reproducible, consent-aware dataset releases."""
