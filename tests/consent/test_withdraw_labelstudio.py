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


@pytest.mark.integration
def test_withdrawal_reaches_every_annotators_workspace(live, tiny_manifest, media_root) -> None:
    """Each annotator labels in an organisation of their own: the subject's tasks go from all of them."""
    from pipeline.annotate.accounts import acting_in, add_annotator, annotator_orgs
    from pipeline.annotate.server import DB_NAME
    from pipeline.annotate.sync import PushOptions, push
    from pipeline.layout import Layout
    from pipeline.privacy.labelstudio import delete_everywhere

    _, ls, data_dir, _ = live
    db = data_dir / DB_NAME
    for email in ("w1@mvfer.local", "w2@mvfer.local"):
        add_annotator(ls, db, email)
    config = Layout.discover().label_config.read_text()
    res = push(ls, db, "withdraw-ws", tiny_manifest, media_root / "media", media_root, config, PushOptions(overlap=2))
    assert all(v["imported"] > 0 for v in res["annotators"].values())
    victim = sorted(tiny_manifest["subject_id"])[0]
    targets = set(tiny_manifest.loc[tiny_manifest["subject_id"] == victim, "take_id"]) | {victim}
    assert delete_everywhere(ls, targets, db) > 0
    for org, email, _ in annotator_orgs(db):
        with acting_in(db, org):
            pid = res["annotators"][email]["project_id"]
            left = {t.data["take_id"] for t in project_tasks(ls, pid)}
            assert left and not left & targets, email
