"""Waiting for a human: `approval_required`, `pending`, decide(wait=True) while the workflow's
owner approves or denies in another thread, single use, timeouts, and a stream that drops."""

from __future__ import annotations

import time
from typing import List

import pytest
from conftest import OWNER, Admin, DroppingProxy, Env, TaskInfo, later

from remit import (
    ALLOW,
    APPROVAL_REQUIRED,
    DENY,
    PENDING,
    ApprovalState,
    Decision,
    Denied,
    NotFound,
    Remit,
)

TARGET = {"target": "JIRA-101", "comment": "duplicate of JIRA-99"}


@pytest.fixture
def r(env: Env, task: TaskInfo) -> Remit:
    r = Remit(env.url, task.token)
    assert r.decide(tool="jira.read", context={"target": "JIRA-101"}).allowed  # look before you write
    return r


def open_request(r: Remit) -> Decision:
    d = r.decide(tool="jira.write", context=TARGET)
    assert (d.outcome, d.allowed, d.reasons) == (APPROVAL_REQUIRED, False, ("triage.jira-write",)), d
    assert d.needs_approval and d.approval is not None
    assert d.approval.id.startswith("a-")
    assert d.approval.expires_at is not None and d.approval.expires_at.tzinfo is not None
    assert d.approval.reasons == ("writing to Jira needs a human's approval",)
    return d


def test_approval_required_then_pending_then_approved_once(r: Remit, admin: Admin, task: TaskInfo) -> None:
    d = open_request(r)
    aid = d.approval.id if d.approval else ""
    with pytest.raises(Denied) as e:
        r.require(tool="jira.write", context=TARGET)
    assert e.value.outcome == APPROVAL_REQUIRED
    # Presenting it before anyone decided: pending, not a deny.
    p = r.decide(tool="jira.write", context=TARGET, approval=aid)
    assert (p.outcome, p.allowed, p.errors) == (PENDING, False, ())
    assert p.approval is not None and p.approval.id == aid
    a = r.approval(aid)
    assert (a.id, a.state, a.decided, a.decided_by) == (aid, PENDING, False, None)
    assert a.raw["task"] == task.id

    admin.approve(aid, "JIRA-101 checked")
    a = r.approval(aid)
    # Decided with the break-glass credential naming its operator: the record says so.
    assert (a.state, a.approved, a.decided_by, a.reason) == ("approved", True, f"break-glass:{OWNER}", "JIRA-101 checked")
    # A different call does not get to use it.
    other = r.decide(tool="jira.write", context={"target": "JIRA-102"}, approval=aid)
    assert other.outcome == DENY
    ok = r.decide(tool="jira.write", context=TARGET, approval=aid)
    assert (ok.outcome, ok.allowed, ok.reasons, ok.tool) == (ALLOW, True, ("triage.jira-write",), "jira.write")
    # Single use: presenting it again is a deny that says why.
    again = r.decide(tool="jira.write", context=TARGET, approval=aid)
    assert again.outcome == DENY
    assert any("used" in e for e in again.errors), again.errors
    # Waiting on a decided request returns at once.
    t0 = time.monotonic()
    assert r.wait_for_approval(aid, timeout=30).state == "used"
    assert time.monotonic() - t0 < 5


def test_decide_waits_for_the_human_and_retries(r: Remit, admin: Admin) -> None:
    seen: List[Decision] = []

    def waiting(d: Decision) -> None:
        seen.append(d)
        assert d.approval is not None
        later(0.5, admin.approve, d.approval.id, "looks right")

    t0 = time.monotonic()
    d = r.decide(tool="jira.write", context=TARGET, wait=True, wait_timeout=60, on_wait=waiting)
    assert time.monotonic() - t0 < 30
    assert len(seen) == 1 and seen[0].outcome == APPROVAL_REQUIRED
    assert (d.outcome, d.allowed, d.reasons) == (ALLOW, True, ("triage.jira-write",)), d
    assert d.approval is not None and seen[0].approval is not None and d.approval.id == seen[0].approval.id
    assert d.approval_state is not None
    assert (d.approval_state.state, d.approval_state.decided_by, d.approval_state.reason) == (
        "approved",
        f"break-glass:{OWNER}",
        "looks right",
    )
    # The approval was for that one call: the same call again opens a new request.
    d2 = r.decide(tool="jira.write", context=TARGET)
    assert d2.outcome == APPROVAL_REQUIRED and d2.approval is not None and d2.approval.id != d.approval.id
    assert r.decide(tool="jira.write", context=TARGET, approval=d.approval.id).outcome == DENY


def test_a_wait_for_an_already_opened_request(r: Remit, admin: Admin) -> None:
    d = open_request(r)
    assert d.approval is not None
    later(0.5, admin.approve, d.approval.id, "fine")
    # Presenting the request with wait=True: pending, then the wait, then the retry.
    final = r.require(tool="jira.write", context=TARGET, approval=d.approval.id, wait=True, wait_timeout=60)
    assert final.outcome == ALLOW


def test_a_human_denies(r: Remit, admin: Admin) -> None:
    def waiting(d: Decision) -> None:
        assert d.approval is not None
        later(0.5, admin.deny, d.approval.id, "not during the freeze")

    d = r.decide(tool="jira.write", context=TARGET, wait=True, wait_timeout=60, on_wait=waiting)
    assert (d.outcome, d.allowed) == (DENY, False)
    assert d.approval_state is not None and d.approval_state.state == "denied"
    assert d.approval_state.reason == "not during the freeze"
    assert d.errors and f"was denied by break-glass:{OWNER}: not during the freeze" in d.errors[0]
    with pytest.raises(Denied) as e:
        r.require(tool="jira.write", context=TARGET, wait=True, wait_timeout=60, on_wait=waiting)
    assert "denied" in str(e.value)


def test_nobody_decides_in_time(r: Remit) -> None:
    t0 = time.monotonic()
    d = r.decide(tool="jira.write", context=TARGET, wait=True, wait_timeout=1.5)
    waited = time.monotonic() - t0
    assert 1.0 <= waited < 10, waited
    assert (d.outcome, d.allowed) == (PENDING, False)
    assert d.approval is not None and d.approval_state is not None and d.approval_state.state == PENDING
    # wait_for_approval times out the same way: the last state seen, still pending.
    s = r.wait_for_approval(d.approval.id, timeout=1)
    assert isinstance(s, ApprovalState) and (s.id, s.state, s.decided) == (d.approval.id, PENDING, False)
    assert s.expires_at is not None


def test_a_dropped_stream_is_reopened_not_taken_as_a_decision(
    r: Remit, admin: Admin, task: TaskInfo, dropping_proxy: DroppingProxy
) -> None:
    d = open_request(r)
    assert d.approval is not None
    aid = d.approval.id
    via_proxy = Remit(dropping_proxy.url, task.token)
    later(1.5, admin.approve, aid, "after the blip")
    s = via_proxy.wait_for_approval(aid, timeout=60)
    assert (s.state, s.reason) == ("approved", "after the blip")
    assert dropping_proxy.connections >= 2, "the dropped stream was not reopened"


def test_another_tasks_request_is_not_found(r: Remit, admin: Admin, env: Env) -> None:
    d = open_request(r)
    assert d.approval is not None
    other = Remit(env.url, admin.start_task().token)
    with pytest.raises(NotFound):
        other.approval(d.approval.id)
    with pytest.raises(NotFound):
        other.wait_for_approval(d.approval.id, timeout=10)
    # Nor may it be used by another task, approved or not.
    admin.approve(d.approval.id)
    assert other.decide(tool="jira.read").allowed
    assert other.decide(tool="jira.write", context=TARGET, approval=d.approval.id).outcome == DENY
