"""Start, stop and check a local Label Studio server: loopback only, no prompt, telemetry off.

Label Studio lives in its own virtual environment (`make labelstudio`, `.venv-ls`) so its pins
never move the pipeline's. The token comes from the environment ($LABEL_STUDIO_API_KEY); the
server is started in its own process group and stopped by that group's id, never by name.
A migrated database is kept as a template per Label Studio version, so a start takes seconds.

Secrets: the template holds no user and no token; every start makes $LABEL_STUDIO_API_KEY the only
valid API token (older tokens are deleted, JWTs blacklisted); the data folder is 0700 and every file
in it 0600; a generated password is returned to the caller (printed once), never logged or stored.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
USER_ENV = "LABEL_STUDIO_USERNAME"
PASSWORD_ENV = "LABEL_STUDIO_PASSWORD"
DEFAULT_USER = "admin@mvfer.local"
LS_VENV = Path(__file__).resolve().parents[2] / ".venv-ls"  # beside the code: `make labelstudio` builds it
DB_NAME = "label_studio.sqlite3"
GUARD_DIR = Path(__file__).resolve().parent / "lsguard"  # mvfer's guard middleware and page script (see there)
TEMPLATE_KIND = "nouser"  # template file name part: templates built before this had a throwaway superuser


class LabelStudioError(PipelineError, RuntimeError):
    """The server could not be started, reached or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    url: str
    data_dir: str
    media_root: str
    version: str
    password: str | None = field(default=None, repr=False, compare=False)  # generated now; never written to disk

    def public(self) -> dict:
        """What server.json keeps: everything but the password."""
        return {k: v for k, v in asdict(self).items() if k != "password"}


def executable(venv: Path = LS_VENV) -> Path:
    exe = venv / "bin" / "label-studio"
    if not exe.exists():
        raise LabelStudioError(f"{exe} not found; install the server with `make labelstudio`")
    return exe


@functools.lru_cache(maxsize=4)
def version(venv: Path = LS_VENV) -> str:
    """Label Studio's version in `venv` (a subprocess import, so asked once per process)."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import label_studio; print(label_studio.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise LabelStudioError(
            f"cannot read the Label Studio version from {venv}: {out.stderr.strip().splitlines()[-1:]}"
        )
    return out.stdout.strip()


def free_port() -> int:
    """A free loopback port (Label Studio silently moves to port+1 when busy, so we check first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) and make it 0700: it holds databases and credentials."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _env(data_dir: Path, media_root: Path, token: str | None, user: str | None, password: str | None) -> dict[str, str]:
    """The server's environment; no user/token variables at all when building the template."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
    if user and password and token:
        env.update({"LABEL_STUDIO_USERNAME": user, "LABEL_STUDIO_PASSWORD": password, "LABEL_STUDIO_USER_TOKEN": token})
    env.update(
        {
            "HOME": str(data_dir / "home"),
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(media_root),
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
            # mvfer's guard: annotators blind to each other, no settings changes, marks checked
            # (lsguard/sitecustomize.py adds lsguard/mvfer_ls_guard.py to Label Studio's middleware)
            "PYTHONPATH": os.pathsep.join([str(GUARD_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
    )
    return env


def _ready(url: str) -> bool:
    """Does our own server on 127.0.0.1 answer its health check?"""
    import http.client
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _wait(proc: subprocess.Popen, url: str, timeout: float, log_file: Path) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
            raise LabelStudioError(f"Label Studio exited with code {proc.returncode}: {' | '.join(tail)}")
        if _ready(url):
            return
        time.sleep(0.5)
    _kill_group(proc.pid)
    raise LabelStudioError(f"Label Studio did not answer {url}/health/ within {timeout:.0f} s; see {log_file}")


def _kill_group(pid: int, grace: float = 15.0) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not gone after `grace` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    t0 = time.monotonic()
    while time.monotonic() - t0 < grace:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _launch(
    data_dir: Path, media_root: Path, port: int, token: str | None, user: str | None, password: str | None, venv: Path
) -> subprocess.Popen:
    private_dir(data_dir / "home")
    log_file = data_dir / "server.log"
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        return subprocess.Popen(
            [str(executable(venv)), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
            env=_env(data_dir, media_root, token, user, password),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=data_dir,
            umask=0o077,
        )


def _db_user_id(db: Path, email: str) -> int | None:
    with sqlite3.connect(db) as c:
        row = c.execute("SELECT id FROM htx_user WHERE email = ?", (email,)).fetchone()
    return None if row is None else int(row[0])


def set_only_token(db: Path, email: str, token: str) -> None:
    """Make `token` the one valid API token, owned by `email`: every other token is deleted and every
    issued JWT refresh token blacklisted (Label Studio sets the env token only when it creates the user)."""
    uid = _db_user_id(db, email)
    if uid is None:
        raise LabelStudioError(f"{db}: no user {email!r} to own the API token")
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM authtoken_token")
        c.execute("INSERT INTO authtoken_token (key, created, user_id) VALUES (?, ?, ?)", (token, now, uid))
        c.execute(
            "INSERT INTO token_blacklist_blacklistedtoken (blacklisted_at, token_id) "
            "SELECT ?, id FROM token_blacklist_outstandingtoken WHERE id NOT IN "
            "(SELECT token_id FROM token_blacklist_blacklistedtoken)",
            (now,),
        )


def _strip_credentials(db: Path) -> None:
    """The template keeps the schema and Label Studio's own rows, but no user, session or token."""
    with sqlite3.connect(db) as c:
        for table in (
            "authtoken_token",
            "token_blacklist_blacklistedtoken",
            "token_blacklist_outstandingtoken",
            "django_session",
            "organizations_organizationmember",
            "organization",
            "htx_user_groups",
            "htx_user_user_permissions",
            "users_userproducttour",
            "htx_user",
        ):
            c.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        users = c.execute("SELECT count(*) FROM htx_user").fetchone()[0]
        tokens = c.execute("SELECT count(*) FROM authtoken_token").fetchone()[0]
    if users or tokens:
        raise LabelStudioError(f"{db}: the template still holds {users} user(s) and {tokens} token(s)")


def template_db(cache: Path, venv: Path = LS_VENV, timeout: float = 180) -> Path:
    """A migrated database for this Label Studio version in `cache`, built once (about 25 s)."""
    ver = version(venv)
    private_dir(cache.parent)
    cache = private_dir(cache)
    target = cache / f"{ver}-{TEMPLATE_KIND}-{DB_NAME}"
    for stale in cache.glob(f"*-{DB_NAME}"):  # older templates kept a throwaway superuser and its token
        if TEMPLATE_KIND not in stale.name:
            stale.unlink()
    if target.exists():
        return target
    work = cache / f"build-{ver}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    private_dir(work)
    port = free_port()
    log.info("building a migrated Label Studio %s database template (once per version)", ver)
    proc = _launch(work, work, port, None, None, None, venv)  # no user, no token: nothing to leak
    try:
        _wait(proc, f"http://127.0.0.1:{port}", timeout, work / "server.log")
    finally:
        _kill_group(proc.pid)
    _strip_credentials(work / DB_NAME)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(work / DB_NAME, tmp)
    tmp.chmod(0o600)
    os.replace(tmp, target)
    shutil.rmtree(work, ignore_errors=True)
    return target


def templates_dir(data_dir: Path) -> Path:
    """Where database templates are kept: beside the server folder (.labelstudio/templates for .labelstudio/server)."""
    return Path(data_dir).resolve().parent / "templates"


def start(
    data_dir: Path,
    media_root: Path,
    port: int | None = None,
    token: str | None = None,
    venv: Path = LS_VENV,
    timeout: float = 120,
    templates: Path | None = None,
) -> ServerInfo:
    """Start a server on 127.0.0.1 from the template database; returns where it is and its pid."""
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise LabelStudioError(
            f"set ${TOKEN_ENV} to the API token to use (e.g. `export {TOKEN_ENV}=$(python -c "
            "'import secrets; print(secrets.token_hex(20))')`); it is never stored in params or git"
        )
    running = _read_info(data_dir)
    if running is not None and _ours(running, data_dir):
        raise LabelStudioError(
            f"a Label Studio started from {data_dir} is already running at {running.url} (pid {running.pid}); "
            "stop it first with `mvfer labelstudio stop`"
        )
    user = os.environ.get(USER_ENV, DEFAULT_USER)
    port = port or free_port()
    if not port_is_free(port):
        raise LabelStudioError(f"port {port} on 127.0.0.1 is busy; choose another or stop what holds it")
    private_dir(data_dir)
    db = data_dir / DB_NAME
    if not db.exists() or db.stat().st_size == 0:  # an empty file is what a stray sqlite3.connect leaves
        tmp = db.with_suffix(".tmp")
        shutil.copyfile(template_db(templates or templates_dir(data_dir), venv), tmp)
        tmp.chmod(0o600)
        os.replace(tmp, db)
    db.chmod(0o600)
    existing = _db_user_id(db, user) is not None
    generated = None if existing or os.environ.get(PASSWORD_ENV) else secrets.token_urlsafe(12)
    password = os.environ.get(PASSWORD_ENV) or generated or secrets.token_urlsafe(12)  # unused when the user exists
    if existing:
        set_only_token(db, user, token)  # before the server answers: the old token never works again
    proc = _launch(data_dir, media_root, port, token, user, password, venv)
    url = f"http://127.0.0.1:{port}"
    _wait(proc, url, timeout, data_dir / "server.log")
    set_only_token(db, user, token)  # also after a first start (Label Studio created the user just now)
    info = ServerInfo(proc.pid, port, url, str(data_dir), str(media_root), version(venv), password=generated)
    io_fd = os.open(data_dir / "server.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(io_fd, "w") as f:
        json.dump(info.public(), f)
    log.info("Label Studio %s at %s (pid %d); log in as %s", info.version, url, proc.pid, user)
    return info


def _read_info(data_dir: Path) -> ServerInfo | None:
    """What server.json says was started from `data_dir`; None (with a warning) when absent or unreadable."""
    f = data_dir / "server.json"
    if not f.exists():
        return None
    try:
        return ServerInfo(**json.loads(f.read_text()))
    except (OSError, ValueError, TypeError) as e:
        log.warning("%s: unreadable (%s); treated as no server", f, type(e).__name__)
        return None


def _leader_cwd(pid: int) -> Path | None:
    """The working folder of process `pid` ('' when it is gone or not ours to read); None without /proc."""
    if not Path("/proc/self/cwd").exists():
        return None
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return Path("")


def _ours(info: ServerInfo, data_dir: Path) -> bool:
    """Is the process group in server.json still the server started from `data_dir`? A stale file may
    name a pid the system has since given to something else: its leader must run in `data_dir` (where
    `_launch` starts it); without /proc the best evidence is our URL answering."""
    try:
        os.killpg(info.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    cwd = _leader_cwd(info.pid)
    if cwd is None:
        return _ready(info.url)
    return cwd != Path("") and cwd.resolve() == data_dir.resolve()


def status(data_dir: Path) -> ServerInfo | None:
    """The running server of this data dir, or None."""
    info = _read_info(data_dir)
    if info is None or not _ours(info, data_dir):
        return None
    return info if _ready(info.url) else None


def stop(data_dir: Path) -> bool:
    """Stop the server started from this data dir by its process group; False if none ran. A stale
    server.json naming some other process is removed and that process left alone."""
    info = _read_info(data_dir)
    if info is None:
        return False
    if not _ours(info, data_dir):
        log.warning(
            "%s names pid %d, which is not a Label Studio started from %s: nothing stopped, stale file removed",
            data_dir / "server.json",
            info.pid,
            data_dir,
        )
        (data_dir / "server.json").unlink(missing_ok=True)
        return False
    _kill_group(info.pid)
    (data_dir / "server.json").unlink(missing_ok=True)
    return True
