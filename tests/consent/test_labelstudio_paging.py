"""A withdrawal lists Label Studio projects page by page and never asks for the page after the last,
which the server answers with an 'Invalid page' 404 (and the SDK's own pager does ask for it).

The fakes are sized from `sync.PAGE_SIZE` (read, never patched): two full pages are a few hundred
plain objects."""

from __future__ import annotations

from types import SimpleNamespace

from label_studio_sdk.core.api_error import ApiError

from pipeline.annotate import sync
from pipeline.privacy.labelstudio import delete_tasks


class FakeProjects:
    """Label Studio's /api/projects/: pages of `page_size`; a page past the last is a 404. Iterating a
    page walks on to the next one, like the SDK's pager."""

    def __init__(self, n: int) -> None:
        self.all = [SimpleNamespace(id=i) for i in range(1, n + 1)]
        self.asked: list[int] = []

    def list(self, page: int = 1, page_size: int = 100):
        self.asked.append(page)
        items = self.all[(page - 1) * page_size : page * page_size]
        if page > 1 and not items:
            raise ApiError(status_code=404, body={"detail": "Invalid page."})
        pages, count = self, len(self.all)

        class Page:
            def __init__(self) -> None:
                self.items = items
                self.response = SimpleNamespace(count=count, results=items)

            def __iter__(self):
                yield from items
                yield from pages.list(page=page + 1, page_size=page_size)

        return Page()


def test_withdrawal_reaches_every_project_without_asking_past_the_last_page() -> None:
    projects = FakeProjects(2 * sync.PAGE_SIZE)  # two full pages: the pager's third request would be the 404
    tasks = {p.id: [SimpleNamespace(id=10 * p.id, data={"take_id": f"pf0{p.id % 2}-cam_c"})] for p in projects.all}
    deleted: list[int] = []
    ls = SimpleNamespace(
        projects=projects,
        tasks=SimpleNamespace(
            list=lambda project, page=1, **kw: SimpleNamespace(
                items=tasks[project] if page == 1 else [], response=SimpleNamespace(total=1)
            ),
            delete=lambda id: deleted.append(id),
        ),
    )
    assert delete_tasks(ls, {"pf01-cam_c"}) == sync.PAGE_SIZE
    assert deleted == [10 * i for i in range(1, 2 * sync.PAGE_SIZE + 1, 2)]  # every odd project, in order
    assert projects.asked == [1, 2]  # page 2 was full, but the reported count says it was the last


def test_projects_stop_at_a_short_page_when_no_count_is_reported() -> None:
    full = [SimpleNamespace(id=i) for i in range(1, sync.PAGE_SIZE + 1)]
    pages = {1: full, 2: [SimpleNamespace(id=sync.PAGE_SIZE + 1)]}
    asked: list[int] = []
    ls = SimpleNamespace(
        projects=SimpleNamespace(list=lambda page, page_size: asked.append(page) or SimpleNamespace(items=pages[page]))
    )
    assert [p.id for p in sync.projects(ls)] == list(range(1, sync.PAGE_SIZE + 2)) and asked == [1, 2]
