"""Annotator accounts and the admin token check on a local Label Studio.

The API creates users but ignores a password, and gives each new user an API token. An annotator
needs neither a token nor an emailed invitation: we set a one-time password directly in the
server's database (Django's PBKDF2 format), attach the user to the admin's organization and
delete the user's token, so the only valid API token stays $LABEL_STUDIO_API_KEY.
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
                f"Label Studio at {url} refused the token in $LABEL_STUDIO_API_KEY ({e.status_code}): export the token the "
                "server was started with, or restart it with this one (`mvfer labelstudio stop; mvfer labelstudio start`)"
            ) from None
        raise LabelStudioError(f"Label Studio at {url} answered {e.status_code} to a token check") from None
    except (httpx.HTTPError, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LabelStudioError(f"cannot reach Label Studio at {url} ({reason}): start it with `mvfer labelstudio start` "
                               "or check --url") from None


def _open_existing(db: Path) -> sqlite3.Connection:
    """The server's database, read-write, never created: sqlite would otherwise leave an empty file
    that the next `mvfer labelstudio start` takes for a migrated database."""
    if not db.is_file():
        raise LabelStudioError(f"{db}: no Label Studio database here; add-annotator works only on a server this "
                               "checkout started (`mvfer labelstudio start`, or --data-dir naming its folder)")
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
        raise LabelStudioError(f"{db}: cannot set the annotator's password ({e}); is it this server's database?") from None
    log.info("annotator account %s (user id %s) %s", email, user_id, "password reset" if existing else "created")
    return password


def _set_password(db: Path, user_id: int, password: str) -> None:
    """Password, organization membership and no API token for `user_id`, in one transaction."""
    with contextlib.closing(_open_existing(db)) as conn, conn as c:
        org = c.execute("SELECT organization_id FROM organizations_organizationmember WHERE user_id = "
                        "(SELECT id FROM htx_user WHERE is_superuser = 1 ORDER BY id LIMIT 1)").fetchone()
        if org is None:
            raise LabelStudioError(f"{db}: no admin organization found; start the server with `mvfer labelstudio start` first")
        c.execute("UPDATE htx_user SET password = ?, active_organization_id = COALESCE(active_organization_id, ?) WHERE id = ?",
                  (django_password_hash(password), org[0], user_id))
        if c.execute("SELECT 1 FROM organizations_organizationmember WHERE user_id = ? AND organization_id = ?",
                     (user_id, org[0])).fetchone() is None:
            c.execute("INSERT INTO organizations_organizationmember (created_at, updated_at, organization_id, user_id) "
                      "VALUES (datetime('now'), datetime('now'), ?, ?)", (org[0], user_id))
        c.execute("DELETE FROM authtoken_token WHERE user_id = ?", (user_id,))
