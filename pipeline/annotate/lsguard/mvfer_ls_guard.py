"""mvfer's guard inside the Label Studio process: blind, independent annotators, checked marks.

Why: Label Studio's community edition has one role. Any logged-in user can open every project of
the organisation, read every annotation through the API its pages use (object permissions there
only reject revoked members: "cross-org access does not exist by design") and change project
settings. mvfer gives each annotator an organisation of their own (pipeline/annotate/accounts.py)
and keeps gold answers out of Label Studio; this middleware closes what Label Studio leaves open:

- an annotator (any non-superuser) reaches only objects of their own active organisation: every
  project, task, annotation, draft or data-manager view named in the path or the query is looked
  up and refused (404, as if absent) when it belongs to another organisation;
- an annotator may only read, and write their own annotations, drafts and data-manager tabs:
  project settings, imports, exports, storages, members, tokens, webhooks and models are refused
  (403), as are edits of someone else's annotation and any `ground_truth` flag;
- a submitted annotation must carry one onset and one apex, each a single frame inside the take
  (1..n_frames, the task's `n_frames`), onset <= apex (<= offset): otherwise 400 with the reason;
- labeling pages get mvfer's page script and style (one-frame stepping, marks at the current frame
  from the keyboard, the checks above before submit, a larger video).

Refusals are appended to <LABEL_STUDIO_BASE_DATA_DIR>/mvfer_guard.log (one JSON line each).
It runs in Label Studio's own environment and imports nothing from the pipeline; Django is imported
only inside the functions that need it, so `check_marks` can be tested without Label Studio.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARKS = "marks"  # <TimelineLabels name="marks"> in annotations/labeling_config.xml
READ = {"GET", "HEAD", "OPTIONS"}

# url name -> (model, url kwarg) whose organisation must be the annotator's own
SCOPED = {
    "project-detail": ("projects.Project", "pk"),
    "project-next": ("projects.Project", "pk"),
    "label-stream-history": ("projects.Project", "pk"),
    "project-summary": ("projects.Project", "pk"),
    "project-model-versions": ("projects.Project", "pk"),
    "project-data": ("projects.Project", "pk"),
    "project-storage-data-resolve": ("projects.Project", "project_id"),
    "project-storage-data-presign": ("projects.Project", "project_id"),
    "task-detail": ("tasks.Task", "pk"),
    "task-annotations": ("tasks.Task", "pk"),
    "task-drafts": ("tasks.Task", "pk"),
    "task-annotations-drafts": ("tasks.Task", "pk"),
    "task-storage-data-resolve": ("tasks.Task", "task_id"),
    "task-storage-data-presign": ("tasks.Task", "task_id"),
    "annotation-detail": ("tasks.Annotation", "pk"),
    "draft-detail": ("tasks.AnnotationDraft", "pk"),
    "view-detail": ("data_manager.View", "pk"),
}
QUERY_SCOPED = {
    "project": "projects.Project",
    "task": "tasks.Task",
    "view": "data_manager.View",
    "annotation": "tasks.Annotation",
}
READ_OK = set(SCOPED) | {
    None,
    "__none__",
    "main",
    "project-index",
    "project-list",
    "project-counts-list",
    "dm-columns",
    "dm-project",
    "dm-actions",
    "view-list",
    "task-list",
    "current-user-whoami",
    "current-user-hotkeys",
    "product-tour",
    "api-version",
    "version",
    "health",
    "user-login",
    "user-account",
    "user-account-anything",
    "logout",
    "localfiles_data",
    "user-avatar",
    "api-root",
    "label-config-validate",
    "ml-list",
    "user-list",
    "label_link-list",
}
WRITE_OK = {
    ("POST", "task-annotations"),
    ("PATCH", "annotation-detail"),
    ("PUT", "annotation-detail"),
    ("DELETE", "annotation-detail"),
    ("POST", "task-drafts"),
    ("POST", "task-annotations-drafts"),
    ("PATCH", "draft-detail"),
    ("PUT", "draft-detail"),
    ("DELETE", "draft-detail"),
    ("POST", "view-list"),
    ("PATCH", "view-detail"),
    ("PUT", "view-detail"),
    ("DELETE", "view-detail"),
    ("POST", "view-update-order"),
    ("POST", "view-reset"),
    ("POST", "product-tour"),
    ("PATCH", "product-tour"),
    ("POST", "user-login"),
    ("POST", "logout"),
    ("GET", "logout"),
}
DM_ACTIONS_OK = {"next_task"}  # "Label All Tasks"; every other data-manager action (deleting tasks, ...) is refused
OWNED = {"tasks.Annotation": "completed_by_id", "tasks.AnnotationDraft": "user_id"}
PAGE_NAMES = {"project-data", "main", "project-index"}


def _log(entry: dict) -> None:
    base = os.environ.get("LABEL_STUDIO_BASE_DATA_DIR")
    if not base:
        return
    entry = {"t": round(time.time(), 3), **entry}
    fd = os.open(Path(base) / "mvfer_guard.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _org_of(obj) -> int | None:
    """The organisation id an object belongs to (through its project)."""
    if obj.__class__.__name__ == "Project":
        return obj.organization_id
    project = getattr(obj, "project", None)
    if project is None and getattr(obj, "task", None) is not None:
        project = obj.task.project
    return None if project is None else project.organization_id


def _lookup(model: str, pk):
    from django.apps import apps

    try:
        return apps.get_model(model).objects.filter(pk=int(pk)).first()
    except (TypeError, ValueError, LookupError):
        return None


def _token_user(request):
    """The user of a `Token` header (DRF authenticates it only later, in the view)."""
    from django.apps import apps

    auth = request.META.get("HTTP_AUTHORIZATION", "")
    if not auth:
        return None
    kind, _, key = auth.partition(" ")
    if kind.lower() == "token" and key:
        tok = apps.get_model("authtoken", "Token").objects.select_related("user").filter(key=key.strip()).first()
        return tok.user if tok else None
    if kind.lower() == "bearer" and key:
        try:
            from rest_framework_simplejwt.authentication import JWTAuthentication

            got = JWTAuthentication().authenticate(request)
            return got[0] if got else None
        except Exception:  # noqa: BLE001 - an invalid JWT is DRF's to refuse
            return None
    return None


def _single_frames(result: list, label: str) -> list:
    out: list = []
    for r in result or []:
        if not isinstance(r, dict) or r.get("from_name") != MARKS:
            continue
        v = r.get("value") or {}
        if label in (v.get("timelinelabels") or []):
            out.extend(v.get("ranges") or [])
    return out


def check_marks(result: list, n_frames: int | None) -> str | None:
    """Why an annotation's onset/apex marks cannot be accepted, or None (player frames, 1-based)."""
    frames = {}
    for label in ("onset", "apex", "offset"):
        ranges = _single_frames(result, label)
        if label != "offset" and not ranges:
            return f"no {label} mark: step to the {label} frame and press {'O' if label == 'onset' else 'A'}"
        if len(ranges) > 1:
            return f"{len(ranges)} {label} marks: keep one"
        if not ranges:
            continue
        start, end = ranges[0].get("start"), ranges[0].get("end")
        if not isinstance(start, (int, float)) or start != end:
            return f"the {label} mark spans frames {start}-{end}: mark one frame"
        if n_frames and not (1 <= start <= n_frames):
            return f"the {label} mark is at frame {start:g}, outside the take's frames 1-{n_frames}"
        frames[label] = start
    if frames["onset"] > frames["apex"]:
        return f"onset (frame {frames['onset']:g}) comes after apex (frame {frames['apex']:g})"
    if "offset" in frames and frames["offset"] < frames["apex"]:
        return f"offset (frame {frames['offset']:g}) comes before apex (frame {frames['apex']:g})"
    return None


def _route(path: str) -> tuple[str | None, dict]:
    """(url name, kwargs) as Django will route `path` (Label Studio appends a missing slash without redirecting);
    ("__none__", {}) for a path no view answers (Label Studio then answers 404 itself)."""
    from django.urls import Resolver404, resolve

    for candidate in (path, path if path.endswith("/") else path + "/"):
        try:
            match = resolve(candidate)
            return match.url_name, match.kwargs
        except Resolver404:
            continue
    return "__none__", {}


class AnnotatorGuard:
    """Django middleware; see the module docstring."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.page_js = (HERE / "page.js").read_text(encoding="utf-8")
        self.page_css = (HERE / "page.css").read_text(encoding="utf-8")

    def __call__(self, request):
        name, kwargs = _route(request.path_info)
        user = (
            request.user
            if getattr(request, "user", None) is not None and request.user.is_authenticated
            else _token_user(request)
        )
        if user is not None and not user.is_superuser:
            refused = self._refuse(request, user, name, kwargs)
            if refused is not None:
                return refused
        response = self.get_response(request)
        if request.method == "GET" and name in PAGE_NAMES:
            response = self._inject(response)
        return response

    # ---- access
    def _deny(self, request, user, status: int, why: str):
        from django.http import JsonResponse

        _log(
            {
                "user": user.email,
                "method": request.method,
                "path": request.get_full_path(),
                "status": status,
                "why": why,
            }
        )
        return JsonResponse({"detail": f"mvfer: {why}", "status_code": status}, status=status)

    def _refuse(self, request, user, name, kwargs):
        method = request.method
        api = request.path_info.startswith("/api/")
        if method in READ:
            if name not in READ_OK:
                return self._deny(request, user, 403, f"annotators cannot open {request.path_info}")
        elif (method, name) not in WRITE_OK and not (
            method == "POST" and name == "dm-actions" and request.GET.get("id") in DM_ACTIONS_OK
        ):
            return self._deny(request, user, 403, f"annotators cannot {method} {request.path_info}")
        org = user.active_organization_id
        targets = []
        if name in SCOPED:
            model, key = SCOPED[name]
            targets.append((model, kwargs.get(key)))
        for param, model in QUERY_SCOPED.items():
            value = request.GET.get(param)
            if value not in (None, ""):
                targets.append((model, value))
        for model, pk in targets:
            obj = _lookup(model, pk)
            if obj is None:
                continue  # Label Studio answers 404 itself
            if _org_of(obj) != org:
                if not api:
                    from django.http import HttpResponse

                    _log(
                        {
                            "user": user.email,
                            "method": method,
                            "path": request.get_full_path(),
                            "status": 404,
                            "why": "other workspace",
                        }
                    )
                    return HttpResponse("Not found", status=404)
                return self._deny(request, user, 404, f"no such {model.split('.')[-1].lower()} {pk}")
            owner = OWNED.get(model)
            if owner and method not in READ and getattr(obj, owner) != user.id:
                return self._deny(
                    request, user, 403, f"only the annotator who made {model.split('.')[-1].lower()} {pk} may change it"
                )
        if method in ("POST", "PATCH", "PUT") and name in ("task-annotations", "annotation-detail"):
            return self._check_annotation(request, user, name, kwargs)
        return None

    def _check_annotation(self, request, user, name, kwargs):
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return self._deny(request, user, 400, "the annotation is not JSON")
        if not isinstance(body, dict):
            return self._deny(request, user, 400, "the annotation is not a JSON object")
        if body.get("ground_truth"):
            return self._deny(
                request, user, 403, "annotators cannot mark an answer as ground truth (gold answers stay with mvfer)"
            )
        if body.get("was_cancelled") or "result" not in body:
            return None  # a skip, or a change that does not touch the result
        if name == "task-annotations":
            task = _lookup("tasks.Task", kwargs.get("pk"))
        else:
            ann = _lookup("tasks.Annotation", kwargs.get("pk"))
            task = ann.task if ann is not None else None
        n_frames = None
        if task is not None:
            try:
                n_frames = int((task.data or {}).get("n_frames") or 0) or None
            except (TypeError, ValueError):
                n_frames = None
        why = check_marks(body.get("result") or [], n_frames)
        if why:
            return self._deny(request, user, 400, f"not saved: {why}")
        return None

    # ---- page
    def _inject(self, response):
        if getattr(response, "streaming", False) or not response.get("Content-Type", "").startswith("text/html"):
            return response
        html = response.content.decode("utf-8", errors="replace")
        if "</body>" not in html or "mvfer-page" in html:
            return response
        extra = f'<style id="mvfer-page-css">{self.page_css}</style><script id="mvfer-page">{self.page_js}</script>'
        response.content = html.replace("</body>", extra + "</body>", 1).encode("utf-8")
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        return response
