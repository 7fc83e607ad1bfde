"""Delete a withdrawn subject's tasks (with their annotations) from a Label Studio server."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.privacy import scrub

log = logging.getLogger(__name__)


def delete_tasks(ls, ids: set[str]) -> int:
    """Every task, in every project, whose data mentions an id is deleted through the SDK. Projects are
    listed by sync.projects, which never asks for the page after the last (an 'Invalid page' 404)."""
    from pipeline.annotate.sync import project_tasks, projects

    n = 0
    for project in projects(ls):
        for task in project_tasks(ls, project.id):
            data = task.data or {}
            if scrub.mentions(" ".join(str(v) for v in data.values()), ids):
                ls.tasks.delete(id=task.id)
                n += 1
    log.info("Label Studio: %d task(s) deleted", n)
    return n


def delete_everywhere(ls, ids: set[str], db: Path | None) -> int:
    """`delete_tasks` in every organisation mvfer made on its own server (each annotator works in one of their
    own, which the admin's token reaches only while it acts in it); a server without that database: its one."""
    if db is None or not db.is_file():
        return delete_tasks(ls, ids)
    from pipeline.annotate.accounts import acting_in, workspaces

    deleted = 0
    for org in workspaces(db):
        with acting_in(db, org):
            deleted += delete_tasks(ls, ids)
    return deleted
