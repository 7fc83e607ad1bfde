"""Withdrawal of consent: find every artifact that holds a subject and remove or rebuild it."""
