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

from devstack.env import REPO, SECRET_NAMES, airflow_user

#: variables of .env.example that hold secrets (``devstack.env.STACK_SETTINGS``); ``compose-env`` and the
#: local stack generate a value for each empty one
COMPOSE_SECRETS = SECRET_NAMES


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, created with mode 600 (the umask cannot widen it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_TRUNC


def new_secret(name: str) -> str:
    """A fresh value for the secret ``name``: a Fernet key for AIRFLOW_FERNET_KEY, else URL-safe text
    (the passwords go into connection URLs unquoted)."""
    if name == "AIRFLOW_FERNET_KEY":  # what cryptography's Fernet.generate_key() returns
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_urlsafe(24)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a .env file (comments and blank lines skipped)."""
    out = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                out[key.strip()] = value.strip()
    return out


def stack_secrets(path: Path, env: dict[str, str]) -> dict[str, str]:
    """Every secret of the local stack: from ``env`` when set there, else from ``path`` (mode 600), else
    generated once and kept in ``path``. Never printed."""
    kept = read_env_file(path)
    values = {name: env.get(name) or kept.get(name) or new_secret(name) for name in SECRET_NAMES}
    if any(kept.get(k) != v for k, v in values.items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, "# secrets of the local stack (python -m devstack stack); generated, never commit\n"
                       + "".join(f"{k}={v}\n" for k, v in values.items()))
    if path.exists():
        os.chmod(path, 0o600)
    return values


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
                value = new_secret(key)
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
