"""Learning stages: per-frame features, sequence-model training, evaluation."""
