"""A withdrawal deletes the subject's tasks on a real Label Studio server (loopback, own token)."""

from __future__ import annotations

import pytest

from pipeline.annotate.sync import project_tasks
from pipeline.privacy.labelstudio import delete_tasks

CONFIG = '<View><Text name="t" value="$take_id"/><Choices name="c" toName="t"><Choice value="x"/></Choices></View>'


@pytest.mark.integration
def test_withdrawal_deletes_the_subjects_tasks_on_a_real_server(live) -> None:
    _, ls, _, _ = live
    kept = []
    for title, takes in (("withdraw-a", ["pf09001-cam_c", "pf09002-cam_c"]), ("withdraw-b", ["pf09001-cam_r30"])):
        p = ls.projects.create(title=title, label_config=CONFIG)
        ls.projects.import_tasks(id=p.id, request=[{"take_id": t} for t in takes], return_task_ids=True)
        kept.append(p.id)
    assert delete_tasks(ls, {"pf09001-cam_c", "pf09001-cam_r30"}) == 2
    left = sorted(t.data["take_id"] for pid in kept for t in project_tasks(ls, pid))
    assert left == ["pf09002-cam_c"]
