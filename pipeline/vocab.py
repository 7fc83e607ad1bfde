"""The project's shared words: take statuses, split names, expression classes, data sources.

One place so that a stage never spells a status or a split differently from another (a typo in a
literal silently selects nothing); stages import these constants instead of repeating strings.
"""

from __future__ import annotations

from typing import Final

# --- take status in the ingest manifest ---------------------------------------------------------
ACCEPTED: Final = "accepted"
QUARANTINED: Final = "quarantined"
TAKE_STATUSES: Final = (ACCEPTED, QUARANTINED)

# --- per-take verdicts of later stages -----------------------------------------------------------
ALIGN_OK: Final = "ok"
FLAGGED: Final = "flagged"  # align: the take was aligned but has quality problems
REANNOTATE: Final = "reannotate"  # qa: the label is not trusted, the take goes back to annotators
LABEL_STATUSES: Final = (ACCEPTED, REANNOTATE)

# --- split names -----------------------------------------------------------------------------------
TRAIN: Final = "train"
VAL: Final = "val"
TEST: Final = "test"
TEST_SEEN: Final = "test_seen"
TEST_UNSEEN: Final = "test_unseen"
SPLITS: Final = (TRAIN, VAL, TEST, TEST_SEEN, TEST_UNSEEN)
TRAINING_SPLITS: Final = (TRAIN, VAL)
TEST_SPLITS: Final = (TEST, TEST_SEEN, TEST_UNSEEN)
MODE_TEST_SPLITS: Final = (TEST_SEEN, TEST_UNSEEN)

# --- classes: the six basic expressions (Ekman), in the order models index them ---------------------
CLASSES: Final = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")

# --- consent table (subjects.csv) ---------------------------------------------------------------------
CONSENT_RESEARCH: Final = "consent_research"
CONSENT_PUBLIC: Final = "consent_public_release"
WITHDRAWN: Final = "withdrawn"
CONSENT_FLAGS: Final = (CONSENT_RESEARCH, CONSENT_PUBLIC, WITHDRAWN)
SUBJECTS_REQUIRED: Final = ("subject_id", *CONSENT_FLAGS)

# --- where the takes came from (manifest column `source`) ----------------------------------------------
SOURCE_COLUMN: Final = "source"
SOURCE_SIMULATOR: Final = "simulator"
SOURCE_RIG: Final = "rig"
SOURCES: Final = (SOURCE_SIMULATOR, SOURCE_RIG)
SIMULATOR_MARKER: Final = "SIMULATED"  # file the capture simulator writes in its raw folder

# The columns of a capture log, in order: what a rig (or the simulator, or an importer) writes and what
# ingest requires. Importers append their own columns after these.
CAPTURE_LOG_COLUMNS: tuple[str, ...] = (
    "take_id",
    "subject_id",
    "session",
    "camera",
    "yaw",
    "pitch",
    "illumination",
    "prompted_expression",
    "fps",
    "recorded_at",
    "file",
)
