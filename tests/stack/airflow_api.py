"""A small client of Airflow 3's REST API with the admin's login (what the stack tests drive the stack with)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime


class AirflowAPI:
    """Bearer token from ``POST /auth/token`` with the login; JSON in, JSON out."""

    def __init__(self, url: str, username: str, password: str):
        self.url = url
        self.token = self.call("POST", "/auth/token", {"username": username, "password": password},
                               token=None)["access_token"]

    def call(self, method: str, path: str, payload: dict | None = None, token: str | None | bool = True,
             **params):
        query = f"?{urllib.parse.urlencode(params, doseq=True)}" if params else ""
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.url + path + query, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        bearer = self.token if token is True else token
        if bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        with urllib.request.urlopen(request, timeout=60) as resp:
            text = resp.read().decode()
        return json.loads(text) if text.strip().startswith(("{", "[")) else text

    def get(self, path: str, **params):
        return self.call("GET", path, **params)

    # --- DAGs and runs --------------------------------------------------------------------------

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, run_id: str, conf: dict | None = None) -> dict:
        return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                         {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}})

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100, order_by="run_after")["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        body = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances",
                        limit=1000)
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict]:
        """Every try of a task instance (finished ones and the current one), oldest first."""
        body = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/"
                        f"{task_id}/tries")
        return sorted(body["task_instances"], key=lambda t: t["try_number"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        """Poll a run until it has ended; returns it (raises TimeoutError with the tasks' states)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                run = self.run(dag_id, run_id)
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
                run = {"state": "not created"}
            if run["state"] in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} {run_id} still {run['state']} after {timeout:.0f}s: "
                                   f"{self.states(dag_id, run_id)}")
            time.sleep(3)

    def states(self, dag_id: str, run_id: str) -> dict[str, str]:
        try:
            return {t: ti["state"] for t, ti in self.task_instances(dag_id, run_id).items()}
        except urllib.error.HTTPError:
            return {}

    def failures(self, dag_id: str, run_id: str) -> str:
        """The failed tasks of a run with the end of each one's log (to explain a red run)."""
        lines = []
        for task_id, ti in self.task_instances(dag_id, run_id).items():
            if ti["state"] not in ("failed", "upstream_failed", "up_for_retry"):
                continue
            lines.append(f"- {task_id}: {ti['state']}")
            try:
                log = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/"
                               f"taskInstances/{task_id}/logs/{max(ti.get('try_number') or 1, 1)}",
                               full_content="true")
                content = log.get("content") if isinstance(log, dict) else log
                entries = content if isinstance(content, list) else [content]
                lines.append("\n".join(str(e.get("event", e)) if isinstance(e, dict) else str(e)
                                       for e in entries)[-3000:])
            except (urllib.error.URLError, ValueError, KeyError) as exc:
                lines.append(f"  (log unavailable: {exc})")
        return "\n".join(lines)


def when(stamp: str | None) -> float | None:
    """An API timestamp as epoch seconds."""
    return None if not stamp else datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
