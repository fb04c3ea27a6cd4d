"""The stack's own PostgreSQL cluster and Redis server, under its folder, on 127.0.0.1 only.

PostgreSQL: ``initdb`` once into ``<stack>/postgres/data``, then ``postgres`` in the foreground under the
supervisor. It refuses to run as root, so when the stack runs as root the cluster belongs to the
``postgres`` OS user (the Debian package creates it). Local socket connections use peer authentication
in a socket folder only that user can open; TCP on 127.0.0.1 needs a password (SCRAM). Roles and
databases are created idempotently from SQL on psql's standard input, with SCRAM verifiers computed
here, so no password is ever on a command line or in PostgreSQL's log.

Redis: ``redis-server`` with a mode-600 configuration file (bind 127.0.0.1, ``requirepass``).
"""

from __future__ import annotations

import base64
import glob
import hashlib
import hmac
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

from devstack.credentials import _write_private
from devstack.env import HOST

INSTALL_SCRIPT = Path(__file__).resolve().parent / "install_stack.sh"


# --- binaries ---------------------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """``/usr/lib/postgresql/<newest>/bin`` (Debian's layout), or None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def redis_binary() -> str | None:
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                             else None)


def missing_packages() -> list[str]:
    return [name for name, ok in (("postgresql", postgres_bin_dir()), ("redis-server", redis_binary())) if not ok]


def install_packages() -> None:
    """``devstack/install_stack.sh``: apt-get install what is missing (nothing when both are there)."""
    if missing_packages():
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True)


# --- PostgreSQL -------------------------------------------------------------------------------------


def cluster_user() -> str | None:
    """The OS user the cluster runs as: ``postgres`` when this process is root (PostgreSQL refuses root),
    else None (this user)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root needs the `postgres` OS user (the postgresql package creates it)") \
            from exc
    return "postgres"


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _reachable_by(user: str | None, path: Path) -> bool:
    """Can ``user`` reach ``path`` (every folder above it searchable)?"""
    if user is None:
        return True
    proc = subprocess.run(["test", "-x", str(path)], user=user, capture_output=True)
    return proc.returncode == 0


class Postgres:
    """The stack's PostgreSQL cluster: where it lives, how to start it, how to provision it."""

    def __init__(self, root: Path, port: int, host: str = HOST):
        self.root, self.port, self.host = root, port, host
        self.data = root / "data"
        self.sockets = root / "run"
        self.user = cluster_user()
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed; run `bash devstack/install_stack.sh` (or `make stack`)")
        self.bin = bin_dir

    def init(self) -> bool:
        """``initdb`` once (True when it ran). The data and socket folders belong to the cluster's user."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        for folder in (self.data, self.sockets):
            folder.mkdir(exist_ok=True)
            _chown(folder, self.user)
            os.chmod(folder, 0o700)
        if not _reachable_by(self.user, self.data.parent):
            raise RuntimeError(f"the OS user {self.user!r} cannot reach {self.data.parent}: every folder above "
                               f"the stack folder must be searchable (chmod o+x), or choose another --dir")
        if (self.data / "PG_VERSION").exists():
            return False
        proc = subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                               "--locale=C", "--auth-local=peer", "--auth-host=scram-sha-256"],
                              user=self.user, capture_output=True, text=True, cwd="/")
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return True

    def command(self) -> list[str]:
        """The postmaster in the foreground (log on stderr), TCP on the host only, socket in ``run/``."""
        return [str(self.bin / "postgres"), "-D", str(self.data), "-c", f"listen_addresses={self.host}",
                "-c", f"port={self.port}", "-c", f"unix_socket_directories={self.sockets}",
                "-c", "unix_socket_permissions=0700", "-c", "logging_collector=off",
                "-c", "max_connections=200", "-c", "password_encryption=scram-sha-256"]

    def ready(self) -> bool:
        proc = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", str(self.sockets), "-p", str(self.port),
                               "-U", "postgres"], user=self.user, capture_output=True, cwd="/")
        return proc.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` (from standard input, never on the command line) as the superuser over the socket."""
        proc = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockets),
                               "-p", str(self.port), "-U", "postgres", "-d", database, "-At"],
                              input=sql, user=self.user, capture_output=True, text=True, cwd="/")
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr.strip()[-1000:]}")
        return proc.stdout

    def ensure_database(self, name: str, role: str, password: str) -> None:
        """Role ``role`` (login, this password) owning database ``name``; idempotent."""
        verifier = scram_verifier(password)
        self.psql(f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE "{role}" LOGIN; END IF;
END $$;
ALTER ROLE "{role}" LOGIN PASSWORD '{verifier}';
SELECT 'CREATE DATABASE "{name}" OWNER "{role}"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{name}')\\gexec
REVOKE ALL ON DATABASE "{name}" FROM PUBLIC;
""")

    def url(self, role: str, password: str, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{role}:{password}@{self.host}:{self.port}/{database}"


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (what ``ALTER ROLE ... PASSWORD`` stores), so the
    password itself never reaches the server. ASCII passwords need no SASLprep (ours are URL-safe)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


# --- Redis ------------------------------------------------------------------------------------------


class Redis:
    """The Celery broker: ``redis-server`` on the host only, with a password, its files under ``root``."""

    def __init__(self, root: Path, port: int, password: str, host: str = HOST):
        self.root, self.port, self.password, self.host = root, port, password, host
        self.config = root / "redis.conf"

    def command(self) -> list[str]:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed; run `bash devstack/install_stack.sh` (or `make stack`)")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        _write_private(self.config, "\n".join([
            f"bind {self.host}", f"port {self.port}", "protected-mode yes", "daemonize no",
            f"dir {self.root}", 'logfile ""', "save \"\"", "appendonly no",
            f"requirepass {self.password}", ""]))
        return [binary, str(self.config)]

    def ready(self) -> bool:
        """AUTH + PING on the port answer +OK, +PONG."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return False
        return reply.startswith(b"+OK\r\n+PONG")

    def url(self, database: int = 0) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/{database}"
