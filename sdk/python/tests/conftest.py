"""Fixtures for the SDK's tests, which run against a REAL Remit server (never a mock).

The server is named by the environment (``crates/cli/tests/python_sdk.rs`` starts one and
sets these):

- ``REMIT_TEST_URL``: its http URL (required);
- ``REMIT_TEST_ADMIN_TOKEN``: the admin credential (required);
- ``REMIT_TEST_ADMIN_SOCKET``: the admin listener's Unix socket path (optional);
- ``REMIT_TEST_REPO``: the repository root (default: three levels above this file).

Without the required ones every test fails, saying so: a suite that silently skips proves
nothing. Set-up goes through the admin HTTP API with urllib, not through the SDK under test:
once per session the ``triage`` workflow (owner ``alice@example.com``, tools ``jira.read`` and
``jira.write``, ceiling ``restricted``), the agent ``triage-bot`` and the policy bundle
``examples/agents/policies/triage.cedar``; a fresh task for each test.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

OWNER = "alice@example.com"
WORKFLOW = "triage"
AGENT = "triage-bot"
TOOLS = ["jira.read", "jira.write"]


@dataclass(frozen=True)
class Env:
    url: str
    admin_token: str
    admin_socket: Optional[str]
    repo: Path


class Admin:
    """The admin HTTP API, with urllib: what a human operator does around the agent."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._token = token

    def call(
        self, method: str, path: str, body: Optional[Dict[str, Any]] = None, operator: Optional[str] = None
    ) -> Tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if operator:
            req.add_header("x-remit-operator", operator)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        return status, (json.loads(raw) if raw.strip() else None)

    def ok(self, method: str, path: str, body: Optional[Dict[str, Any]] = None, operator: Optional[str] = None) -> Any:
        status, v = self.call(method, path, body, operator)
        assert 200 <= status < 300, f"{method} {path}: {status} {v}"
        return v

    def start_task(self, sensitivity: Optional[str] = None, intent: str = "triage new tickets") -> "TaskInfo":
        body: Dict[str, Any] = {"workflow": WORKFLOW, "agent": AGENT, "intent": intent, "audience": ["remit"]}
        body["ttl_seconds"] = 300
        if sensitivity:
            body["sensitivity"] = sensitivity
        v = self.ok("POST", "/v1/tasks", body)
        return TaskInfo(id=v["task"]["id"], token=v["token"])

    def revoke(self, task_id: str, reason: str = "incident 42") -> None:
        self.ok("POST", f"/v1/tasks/{task_id}/revoke", {"reason": reason})

    def approve(self, approval_id: str, reason: str = "checked", operator: str = OWNER) -> Any:
        return self.ok("POST", f"/v1/approvals/{approval_id}/approve", {"reason": reason}, operator)

    def deny(self, approval_id: str, reason: str = "no", operator: str = OWNER) -> Any:
        return self.ok("POST", f"/v1/approvals/{approval_id}/deny", {"reason": reason}, operator)

    def pending_approvals(self) -> List[Dict[str, Any]]:
        return list(self.ok("GET", "/v1/approvals?state=pending&limit=1000")["approvals"])


@dataclass(frozen=True)
class TaskInfo:
    id: str
    token: str


def _env() -> Env:
    missing = [k for k in ("REMIT_TEST_URL", "REMIT_TEST_ADMIN_TOKEN") if not os.environ.get(k, "").strip()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not set: these tests need a running Remit server "
            "(REMIT_TEST_URL=http://…, REMIT_TEST_ADMIN_TOKEN=<admin credential>); "
            "`cargo test -p remit --test python_sdk` starts one and runs them",
            pytrace=False,
        )
    repo = os.environ.get("REMIT_TEST_REPO") or str(Path(__file__).resolve().parents[3])
    return Env(
        url=os.environ["REMIT_TEST_URL"].strip().rstrip("/"),
        admin_token=os.environ["REMIT_TEST_ADMIN_TOKEN"].strip(),
        admin_socket=os.environ.get("REMIT_TEST_ADMIN_SOCKET", "").strip() or None,
        repo=Path(repo),
    )


@pytest.fixture(scope="session", autouse=True)
def env() -> Env:
    """The server under test; every test fails, saying why, when it is not configured."""
    return _env()


@pytest.fixture(scope="session")
def admin(env: Env) -> Admin:
    """The admin API, with the triage workflow, agent and policies in place (once)."""
    a = Admin(env.url, env.admin_token)
    wf = {
        "name": WORKFLOW,
        "purpose": "triage new Jira tickets",
        "owner": OWNER,
        "allowed_tools": TOOLS,
        "ceiling": "restricted",
    }
    status, v = a.call("POST", "/v1/workflows", wf)
    if status == 409:  # a server reused between runs: it must be the same workflow
        v = a.ok("GET", f"/v1/workflows/{WORKFLOW}")
        assert v["owner"] == OWNER and sorted(v["allowed_tools"]) == TOOLS and v["state"] == "active", v
    else:
        assert status == 201, f"creating the workflow: {status} {v}"
    status, v = a.call("POST", "/v1/agents", {"name": AGENT, "owner": OWNER, "workflows": [WORKFLOW]})
    assert status in (201, 409), f"creating the agent: {status} {v}"
    source = (env.repo / "examples/agents/policies/triage.cedar").read_text(encoding="utf-8")
    a.ok("PUT", "/v1/policies", {"policies": [{"name": "triage.cedar", "source": source}], "schema": "", "mapping": {}})
    return a


@pytest.fixture
def task(admin: Admin) -> TaskInfo:
    """A fresh live task of the triage workflow, with its token."""
    return admin.start_task()


@pytest.fixture
def remit_env(env: Env, task: TaskInfo) -> Dict[str, str]:
    """The environment `remit exec` would give an agent running `task`."""
    return {"REMIT_URL": env.url, "REMIT_TASK_TOKEN": task.token, "REMIT_TASK_ID": task.id}


def later(delay: float, fn: Any, *args: Any) -> threading.Thread:
    """Runs ``fn(*args)`` in a thread after ``delay`` seconds (a human acting meanwhile)."""

    def run() -> None:
        time.sleep(delay)
        fn(*args)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class DroppingProxy:
    """A TCP forwarder to the real server that cuts its first ``drops`` connections as soon
    as the server's first bytes have passed (a network blip in the middle of a stream)."""

    def __init__(self, host: str, port: int, drops: int) -> None:
        self._target = (host, port)
        self._drops = drops
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                drop = self.connections <= self._drops
            threading.Thread(target=self._serve, args=(client, drop), daemon=True).start()

    def _serve(self, client: socket.socket, drop: bool) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=30)
        except OSError:
            client.close()
            return

        def pump(src: socket.socket, dst: socket.socket, cut: bool) -> None:
            try:
                while True:
                    chunk = src.recv(65536)
                    if not chunk:
                        break
                    dst.sendall(chunk)
                    if cut:
                        break
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
        pump(upstream, client, drop)
        client.close()
        upstream.close()

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def dropping_proxy(env: Env) -> Iterator[DroppingProxy]:
    """A proxy to the server that drops its first connection mid-answer."""
    parts = urllib.parse.urlsplit(env.url)
    p = DroppingProxy(parts.hostname or "127.0.0.1", parts.port or 80, drops=1)
    yield p
    p.close()
