"""Per-frame feature backends, chosen by name (`features.backends` in params.yaml).

- `cnn`: a small CNN trained per fold on the raw aligned frames of the training subjects.
- `cnn_delta`: the same CNN on each frame minus the take's first found (neutral) frame: the
  subject's identity cancels, the expression remains; the strong baseline.
- `cnn_pair`: the same CNN on that difference and the frame stacked (6 channels, in that order):
  the difference says what changed, the frame where on the face it sits; the strongest on the
  default data.
- `hog`: scikit-image HOG of the grey aligned crop; nothing trained.

Every backend fits on the training takes only and encodes any take frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.learn.backends.base import Backend, TrainingFrames
from pipeline.learn.backends.cnn import CNNBackend
from pipeline.learn.backends.hog import HOGBackend

BACKENDS: dict[str, Callable[..., Backend]] = {
    "cnn": lambda **kw: CNNBackend("frame", **kw),
    "cnn_delta": lambda **kw: CNNBackend("delta", **kw),
    "cnn_pair": lambda **kw: CNNBackend("pair", **kw),
    "hog": lambda **kw: HOGBackend(**kw),
}


def make_backend(name: str, **kwargs) -> Backend:
    """A backend by its params name; an unknown name lists the known ones."""
    if name not in BACKENDS:
        raise ValueError(f"unknown feature backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name](**kwargs)


__all__ = ["BACKENDS", "Backend", "TrainingFrames", "make_backend"]
