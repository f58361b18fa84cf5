"""The task itself: reading it, completing it, and noticing at once when it ends."""

from __future__ import annotations

import time

import pytest
from conftest import Admin, Env, TaskInfo, later

from remit import ConfigurationError, Conflict, Remit, Unauthenticated


def test_the_task(env: Env, task: TaskInfo) -> None:
    t = Remit(env.url, task.token).task()
    assert (t.id, t.workflow, t.agent, t.state, t.live) == (task.id, "triage", "triage-bot", "active", True)
    assert t.intent == "triage new tickets" and t.sensitivity == "internal"
    assert t.expires_at is not None and t.created_at is not None and t.expires_at > t.created_at
    assert t.spiffe_id.endswith(f"/task/{task.id}") and t.ended_at is None


def test_complete_task(env: Env, task: TaskInfo) -> None:
    r = Remit(env.url, task.token)
    r.complete_task()
    # The token is inactive from now on: ending it again is refused.
    with pytest.raises(Unauthenticated):
        r.complete_task()
    s = r.task_ended(timeout=10)
    assert s is not None and not s.live


def test_task_ended_returns_promptly_when_the_task_is_killed(admin: Admin, env: Env, task: TaskInfo) -> None:
    r = Remit(env.url, task.token)
    # Still live: no answer within the timeout.
    t0 = time.monotonic()
    assert r.task_ended(timeout=1) is None
    assert time.monotonic() - t0 < 5
    later(0.5, admin.revoke, task.id, "incident 9")
    t0 = time.monotonic()
    s = r.task_ended(timeout=30)
    assert time.monotonic() - t0 < 10
    assert s is not None
    assert (s.task, s.live, s.state, s.reason) == (task.id, False, "revoked", "task revoked")
    # Once it ended, asking again returns at once.
    s = r.task_ended(timeout=30)
    assert s is not None and not s.live


def test_completing_an_ended_task_as_admin_conflicts(admin: Admin, env: Env, task: TaskInfo) -> None:
    admin.revoke(task.id)
    gateway = Remit(env.url, env.admin_token)
    with pytest.raises(Conflict) as e:
        gateway.complete_task(task.id)
    assert e.value.status == 409
    assert gateway.task(task.id).state == "revoked"


def test_no_task_id() -> None:
    with pytest.raises(ConfigurationError, match="no task id"):
        Remit("http://127.0.0.1:1", "not-a-jwt").task()
