"""Sequence models (LSTM baseline, MV-LSTM variants) and the per-frame feature CNN."""

from pipeline.models.registry import VARIANTS, SequenceClassifier, make_model

__all__ = ["VARIANTS", "SequenceClassifier", "make_model"]
