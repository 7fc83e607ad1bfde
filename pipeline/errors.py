"""The one base class of the errors the CLI reports as a single line (exit status 1).

Why: the CLI must catch every known error of every stage without importing every stage's modules
(which would make each DVC stage depend on all of them). A module raising such an error derives it
from `PipelineError` as well as from the builtin it specialises.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Bad input or configuration that the user can fix; the message names file and field."""
