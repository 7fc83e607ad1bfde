"""Annotation QA: parse exports, agreement statistics, label aggregation, annotator quality."""
