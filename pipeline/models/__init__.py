"""Sequence models (LSTM baseline, MV-LSTM variants) by name: `pipeline.models.registry.VARIANTS`.

This package imports nothing itself, so a module that needs one model file does not depend on all of them.
"""
