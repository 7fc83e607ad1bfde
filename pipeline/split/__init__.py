"""Subject-independent and unseen-mode split protocols, with leakage checks."""
