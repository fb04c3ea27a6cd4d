"""A process supervisor: child processes in their own sessions, all stopped together, none left behind.

The supervising process makes itself a child subreaper (Linux), so processes orphaned during shutdown
come back to it; it signals each child's process group, waits, then kills whatever descends from it.
Each child gets ``PR_SET_PDEATHSIG``, so ``kill -9`` on the supervisor still takes the children down.
Ctrl-C (SIGINT), SIGTERM and SIGHUP raise :class:`Stop` in the supervisor (:func:`install_stop_handlers`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from devstack.env import MARKER_ENV, REPO

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process (Linux; a no-op elsewhere)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _child_setup() -> None:  # runs in the child between fork and exec, after any change of user
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group_of(user: str | None) -> int | None:
    """The primary group of ``user`` (None: keep the supervisor's)."""
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


# --- the process table ------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) for every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            fields_ = stat[stat.rindex(")") + 2:].split()
            table[int(entry.name)] = (int(fields_[1]), fields_[0])
    return table


def descendants(root: int) -> list[int]:
    """Living (not zombie) descendants of ``root``."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return [p for p in out if table.get(p, (0, "Z"))[1] != "Z"]


def tagged_processes(marker: str) -> list[int]:
    """Living processes whose environment has ``IEP_SERVER_ID=<marker>`` (all that a server started)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for pid, (_, state) in _proc_table().items():
        if state == "Z" or pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"):
                found.append(pid)
    return found


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def reap_orphans(keep: set[int]) -> None:
    """Collect zombies re-parented to this process (it is a subreaper), except Popen's own children."""
    for pid, (ppid, state) in _proc_table().items():
        if ppid == os.getpid() and state == "Z" and pid not in keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file ('' when it cannot be read)."""
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


# --- signals ----------------------------------------------------------------------------------------


class Stop(Exception):
    """Raised in the supervisor by Ctrl-C/SIGTERM/SIGHUP; ``args[0]`` is the signal's name."""


def install_stop_handlers() -> None:
    def handler(signum, _frame):
        raise Stop(signal.Signals(signum).name)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


def ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


# --- the supervisor ---------------------------------------------------------------------------------


@dataclass
class Child:
    """How a child was started, so that it can be started again the same way."""

    cmd: list[str]
    env: dict[str, str] | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    whole_group: bool = True
    restarts: int = 0


@dataclass
class Supervisor:
    """Child processes in their own sessions, all stopped together (used by the CLI)."""

    env: dict[str, str]
    log_dir: Path
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    specs: dict[str, Child] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, user: str | None = None,
              stop_signal: int = signal.SIGTERM, whole_group: bool = True) -> subprocess.Popen:
        """Start ``cmd`` in a new session, its output appended to ``<log_dir>/<name>.log`` (mode 600).

        ``env`` replaces the supervisor's environment for this child; ``user`` runs it as that user (the
        supervisor being root); ``stop_signal`` is what :meth:`stop` sends it first, to its whole process
        group or (``whole_group=False``, e.g. a PostgreSQL postmaster) to the process alone.
        """
        spec = self.specs.get(name) or Child(list(cmd), env, user, stop_signal, whole_group)
        self.specs[name] = spec
        path = self.log_dir / f"{name}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            proc = subprocess.Popen(spec.cmd, env=spec.env or self.env, cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_child_setup, user=spec.user, group=_group_of(spec.user),
                                    extra_groups=[] if spec.user else None)
        self.children[name] = proc
        return proc

    def restart(self, name: str) -> subprocess.Popen:
        """Start a dead child again, the way it was started (counted in ``specs[name].restarts``)."""
        self.specs[name].restarts += 1
        return self.start(name, self.specs[name].cmd)

    def dead(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.children.items() if p.poll() is not None}

    def _signal(self, name: str, sig: int | None = None) -> None:
        proc, spec = self.children[name], self.specs.get(name) or Child([])
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if spec.whole_group:
                os.killpg(proc.pid, sig or spec.stop_signal)
            else:
                os.kill(proc.pid, sig or spec.stop_signal)

    def stop(self, grace: float = 45.0, first: Iterable[str] = ()) -> None:
        """Stop every child: those named in ``first`` before the others (e.g. the clients of a database
        before the database), each with its stop signal; after ``grace`` s kill every remaining descendant."""
        me = os.getpid()
        keep = {p.pid for p in self.children.values()}
        deadline = time.monotonic() + grace
        first = [n for n in first if n in self.children]
        for name in first:
            self._signal(name)
        while first and time.monotonic() < deadline and any(self.children[n].poll() is None for n in first):
            reap_orphans(keep)
            time.sleep(0.5)
        for name in self.children:
            self._signal(name)
        while time.monotonic() < deadline:
            reap_orphans(keep)
            if all(p.poll() is not None for p in self.children.values()) and not descendants(me):
                break
            time.sleep(0.5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = descendants(me)
            if not left:
                break
            signal_all(left, sig)
            end = time.monotonic() + 10
            while time.monotonic() < end and descendants(me):
                reap_orphans(keep)
                time.sleep(0.3)
        for proc in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        reap_orphans(keep)

    def report_dead(self, dead: dict[str, int]) -> int:
        """Print why children died (status, the end of each log); the exit status to return (1)."""
        for name, code in dead.items():
            log = self.log_dir / f"{name}.log"
            print(f"error: {name} exited with status {code}; last lines of {log}:\n{tail(log, 3000)}",
                  file=sys.stderr, flush=True)
        return 1


def supervise_one(env: dict[str, str], log_dir: Path, name: str, cmd: list[str], healthy: Callable[[], bool],
                  timeout: float, what: str, starting: str, ready: Callable[[float], str],
                  grace: float = 20.0) -> int:
    """Run one server under a :class:`Supervisor` until Ctrl-C/SIGTERM/SIGHUP or until it dies;
    ``grace``: seconds it gets to stop cleanly before whatever is left is killed."""
    become_subreaper()
    install_stop_handlers()
    sup = Supervisor(env, log_dir)
    started = time.monotonic()
    try:
        sup.start(name, cmd)
        print(f"{starting}\n  starting (log: {log_dir / (name + '.log')}) ...", flush=True)
        while not healthy():
            if dead := sup.dead():
                return sup.report_dead(dead)
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{what} not healthy after {timeout:.0f}s; see {log_dir}")
            time.sleep(1)
        print(f"\n{ready(time.monotonic() - started)}\n  Ctrl-C stops it.", flush=True)
        while True:
            if dead := sup.dead():
                return sup.report_dead(dead)
            time.sleep(1)
    except Stop as stop:
        print(f"\n{stop.args[0]}: stopping {what} ...", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        ignore_stop_signals()
        sup.stop(grace=grace)
        print(f"stopped (no process left: {not descendants(os.getpid())})", flush=True)
