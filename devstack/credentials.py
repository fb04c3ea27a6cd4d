"""Secrets, generated and kept out of git: the Airflow admin login (mode 600) and the compose ``.env``.

Standard library only: ``python3 -m devstack compose-env`` runs without the virtual environment.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import sys
from pathlib import Path

from devstack.env import REPO, airflow_user

#: variables of .env.example that hold secrets; ``compose-env`` generates a value for each empty one
COMPOSE_SECRETS = ("AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "REDIS_PASSWORD",
                   "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, created with mode 600 (the umask cannot widen it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


# --- the Airflow login ------------------------------------------------------------------------------


def ensure_password(env: dict[str, str]) -> tuple[str, str, Path]:
    """The admin login of the simple auth manager, kept (mode 600) under AIRFLOW_HOME.

    ``AIRFLOW_ADMIN_PASSWORD`` sets it (the compose stack does); otherwise it is generated once.
    """
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    user = airflow_user(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    passwords: dict[str, str] = {}
    if path.exists() and path.read_text().strip():
        passwords = json.loads(path.read_text())
    wanted = env.get("AIRFLOW_ADMIN_PASSWORD") or passwords.get(user) or secrets.token_urlsafe(15)
    if passwords.get(user) != wanted:
        passwords[user] = wanted
        _write_private(path, json.dumps(passwords) + "\n")
    os.chmod(path, 0o600)
    return user, passwords[user], path


def read_password(env: dict[str, str]) -> tuple[str, str] | None:
    """(user, password) from the passwords file, or None while it does not hold one."""
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    with contextlib.suppress(OSError, ValueError):
        user = airflow_user(env)
        password = json.loads(path.read_text()).get(user)
        if password:
            return user, password
    return None


# --- docker compose ---------------------------------------------------------------------------------


def compose_env_text(template: str, uid: int | None = None) -> str:
    """``.env.example`` with every empty secret filled with a fresh random value (and AIRFLOW_UID set)."""
    out = []
    for line in template.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and not line.lstrip().startswith("#"):
            if key in COMPOSE_SECRETS and not value.strip():
                if key == "AIRFLOW_FERNET_KEY":  # what cryptography's Fernet.generate_key() returns
                    value = base64.urlsafe_b64encode(os.urandom(32)).decode()
                else:  # URL-safe: the passwords go into connection URLs unquoted
                    value = secrets.token_urlsafe(24)
            elif key == "AIRFLOW_UID" and uid:  # not 0: containers should not run as root
                value = str(uid)
            line = f"{key}={value}"
        out.append(line)
    return "\n".join(out) + "\n"


def write_compose_env(output: Path, force: bool = False) -> int:
    """``compose-env``: ``output`` (mode 600) from ``.env.example``; an existing one only with ``force``."""
    if output.exists() and not force:
        print(f"error: {output} exists; keep it, or pass --force to replace its secrets", file=sys.stderr)
        return 2
    _write_private(output, compose_env_text((REPO / ".env.example").read_text(), uid=os.getuid()))
    print(f"wrote {output} (mode 600, git-ignored) with generated secrets; "
          f"the Airflow login is admin / AIRFLOW_ADMIN_PASSWORD from that file")
    return 0
