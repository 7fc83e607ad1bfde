"""The two kinds of failure a stage tells apart, and the base class the entry points report in one line.

Why: a fault of one input (a damaged clip, a bad row) is quarantined or flagged with a reason and
the stage goes on; a fault of the environment (disk full, no permission to write an output, memory,
a lost cluster) stops the stage with a non-zero status and one line, so DVC records nothing as
done. Entry points catch these without importing every stage's modules (which would make every
DVC stage depend on all of them): a module's own errors derive from `PipelineError`.
"""

from __future__ import annotations

import errno

# errno values that say the machine, not the data, failed (EFBIG: over the file-size limit, RLIMIT_FSIZE).
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EFBIG}
)


class PipelineError(Exception):
    """Bad input or configuration that the user can fix; the message names file and field (exit 1)."""


class EnvironmentFault(Exception):
    """The machine failed, not an input: stop the stage (exit 2) and record nothing as done."""


def is_environment_fault(exc: BaseException) -> bool:
    """True for faults no input can cause: memory, a full or read-only disk, exhausted file handles."""
    if isinstance(exc, (EnvironmentFault, MemoryError)):
        return True
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def environment_fault(exc: BaseException, doing: str) -> EnvironmentFault:
    """One line naming what was being done and what the machine said (`raise environment_fault(e, ...) from e`)."""
    if isinstance(exc, EnvironmentFault):
        return exc
    reason = (
        exc.strerror
        if isinstance(exc, OSError) and exc.strerror
        else (type(exc).__name__ + (f": {exc}" if str(exc) else ""))
    )
    where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    return EnvironmentFault(f"{doing}: {reason}{where}")
