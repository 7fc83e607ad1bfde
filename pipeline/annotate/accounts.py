"""Annotator accounts and the admin token check on a local Label Studio.

The API creates users but ignores a password, and gives each new user an API token. An annotator
needs neither a token nor an emailed invitation: we set a one-time password directly in the
server's database (Django's PBKDF2 format) and delete the user's token, so the only valid API
token stays $LABEL_STUDIO_API_KEY.

Blind, independent annotators: every annotator gets an organization of their own ("mvfer
annotator <email>"), is a member of that one only, and has it as active organization; the admin is
a member of all of them. Label Studio's community edition scopes its lists (projects, tasks, data
manager) by the user's active organization, so an annotator's pages show only their own project;
what Label Studio leaves open (detail endpoints of other organizations' objects, settings, ground
truth flags) the guard in lsguard/mvfer_ls_guard.py closes. Push and pull act in each annotator's
organization in turn by switching the admin's active organization (`acting_in`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import secrets
import sqlite3
from pathlib import Path

from pipeline.annotate.server import LabelStudioError

log = logging.getLogger(__name__)
PBKDF2_ITERATIONS = 600_000
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def django_password_hash(password: str, salt: str | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Django's `pbkdf2_sha256$iterations$salt$hash` (what its PBKDF2PasswordHasher checks)."""
    salt = salt or secrets.token_urlsafe(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


def check_token(ls, url: str) -> None:
    """One cheap authenticated call; a refused token or an unreachable server becomes a one-line error
    saying what to do (the SDK's transport raises httpx errors, which are not OSErrors)."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        ls.users.whoami()
    except ApiError as e:
        if e.status_code in (401, 403):
            raise LabelStudioError(
                f"Label Studio at {url} refused the token in $LABEL_STUDIO_API_KEY ({e.status_code}): export the token "
                "the server was started with, or restart it with this one "
                "(`mvfer labelstudio stop; mvfer labelstudio start`)"
            ) from None
        raise LabelStudioError(f"Label Studio at {url} answered {e.status_code} to a token check") from None
    except (httpx.HTTPError, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LabelStudioError(
            f"cannot reach Label Studio at {url} ({reason}): start it with `mvfer labelstudio start` or check --url"
        ) from None


def _open_existing(db: Path) -> sqlite3.Connection:
    """The server's database, read-write, never created: sqlite would otherwise leave an empty file
    that the next `mvfer labelstudio start` takes for a migrated database."""
    if not db.is_file():
        raise LabelStudioError(
            f"{db}: no Label Studio database here; add-annotator works only on a server this "
            "checkout started (`mvfer labelstudio start`, or --data-dir naming its folder)"
        )
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True)


def add_annotator(ls, db: Path, email: str) -> str:
    """Create an annotator account (or reset its password) and return a new one-time password."""
    if not EMAIL.match(email):
        raise LabelStudioError(f"{email!r} is not an e-mail address")
    _open_existing(db).close()  # before an account is created on the server
    existing = [u for u in ls.users.list() if (u.email or "").lower() == email.lower()]
    user_id = existing[0].id if existing else ls.users.create(email=email, username=email.split("@")[0]).id
    password = secrets.token_urlsafe(12)
    try:
        _set_password(db, user_id, password)
    except sqlite3.Error as e:
        raise LabelStudioError(
            f"{db}: cannot set the annotator's password ({e}); is it this server's database?"
        ) from None
    log.info("annotator account %s (user id %s) %s", email, user_id, "password reset" if existing else "created")
    return password


ORG_PREFIX = "mvfer annotator "


def _admin_id(c: sqlite3.Connection, db: Path) -> int:
    row = c.execute("SELECT id FROM htx_user WHERE is_superuser = 1 ORDER BY id LIMIT 1").fetchone()
    if row is None:
        raise LabelStudioError(f"{db}: no admin account found; start the server with `mvfer labelstudio start` first")
    return int(row[0])


def _member(c: sqlite3.Connection, org: int, user_id: int) -> None:
    if (
        c.execute(
            "SELECT 1 FROM organizations_organizationmember "
            "WHERE user_id = ? AND organization_id = ? AND deleted_at IS NULL",
            (user_id, org),
        ).fetchone()
        is None
    ):
        c.execute(
            "INSERT INTO organizations_organizationmember (created_at, updated_at, organization_id, user_id) "
            "VALUES (datetime('now'), datetime('now'), ?, ?)",
            (org, user_id),
        )


def _set_password(db: Path, user_id: int, password: str) -> None:
    """Password, an organization of the annotator's own (admin a member too), no API token, in one transaction."""
    with contextlib.closing(_open_existing(db)) as conn, conn as c:
        admin = _admin_id(c, db)
        email = c.execute("SELECT email FROM htx_user WHERE id = ?", (user_id,)).fetchone()[0]
        row = c.execute("SELECT id FROM organization WHERE created_by_id = ?", (user_id,)).fetchone()
        if row is None:
            c.execute(
                "INSERT INTO organization (title, created_at, updated_at, created_by_id, token) "
                "VALUES (?, datetime('now'), datetime('now'), ?, ?)",
                (ORG_PREFIX + email, user_id, secrets.token_urlsafe(30)),
            )
            row = c.execute("SELECT id FROM organization WHERE created_by_id = ?", (user_id,)).fetchone()
        org = int(row[0])
        # the admin's legacy token ($LABEL_STUDIO_API_KEY) must work in it; no personal access tokens for anyone
        c.execute(
            "INSERT OR IGNORE INTO jwt_auth_jwtsettings (organization_id, api_tokens_enabled, api_token_ttl_days, "
            "created_at, updated_at, legacy_api_tokens_enabled) "
            "VALUES (?, 0, 73000, datetime('now'), datetime('now'), 1)",
            (org,),
        )
        # the annotator belongs to their own organization only (an older account may sit in the admin's)
        c.execute(
            "DELETE FROM organizations_organizationmember WHERE user_id = ? AND organization_id != ?", (user_id, org)
        )
        _member(c, org, user_id)
        _member(c, org, admin)
        c.execute(
            "UPDATE htx_user SET password = ?, active_organization_id = ? WHERE id = ?",
            (django_password_hash(password), org, user_id),
        )
        c.execute("DELETE FROM authtoken_token WHERE user_id = ?", (user_id,))


def annotator_orgs(db: Path) -> list[tuple[int, str, int]]:
    """(organization id, annotator e-mail, annotator user id) of every annotator account, by e-mail."""
    with contextlib.closing(_open_existing(db)) as c:
        rows = c.execute(
            "SELECT o.id, u.email, u.id FROM organization o JOIN htx_user u ON u.id = o.created_by_id "
            "WHERE o.title LIKE ? AND u.is_superuser = 0 ORDER BY u.email",
            (ORG_PREFIX + "%",),
        ).fetchall()
    return [(int(o), str(e), int(u)) for o, e, u in rows]


def admin_org(db: Path) -> int:
    """The admin's own organization (the one Label Studio made on the first start)."""
    with contextlib.closing(_open_existing(db)) as c:
        admin = _admin_id(c, db)
        row = c.execute("SELECT id FROM organization WHERE created_by_id = ?", (admin,)).fetchone()
        if row is None:
            row = c.execute(
                "SELECT organization_id FROM organizations_organizationmember WHERE user_id = ? ORDER BY id LIMIT 1",
                (admin,),
            ).fetchone()
    if row is None:
        raise LabelStudioError(
            f"{db}: the admin has no organization; start the server with `mvfer labelstudio start` first"
        )
    return int(row[0])


@contextlib.contextmanager
def acting_in(db: Path, org: int):
    """The admin's API token acts in organization `org` (Label Studio scopes by the active organization)
    until the block ends; then the admin's own organization is active again."""
    home = admin_org(db)
    with contextlib.closing(_open_existing(db)) as conn, conn as c:
        c.execute("UPDATE htx_user SET active_organization_id = ? WHERE id = ?", (org, _admin_id(c, db)))
    try:
        yield org
    finally:
        with contextlib.closing(_open_existing(db)) as conn, conn as c:
            c.execute("UPDATE htx_user SET active_organization_id = ? WHERE id = ?", (home, _admin_id(c, db)))


def workspaces(db: Path) -> list[int]:
    """Every organization mvfer acts in: the admin's own, then each annotator's (for pull and withdrawal)."""
    return [admin_org(db), *[org for org, _, _ in annotator_orgs(db)]]
