"""Decisions against the triage policies (examples/agents/policies/triage.cedar): allow,
the kinds of deny, require(), a gateway asking on a task's behalf, killed tasks, bad input,
and the admin Unix socket."""

from __future__ import annotations

import pytest
from conftest import Admin, Env, TaskInfo

from remit import (
    ALLOW,
    DENY,
    Decision,
    Denied,
    InvalidRequest,
    NotFound,
    Remit,
    Unauthenticated,
)


@pytest.fixture
def r(env: Env, task: TaskInfo) -> Remit:
    return Remit(env.url, task.token)


def test_a_read_is_allowed(r: Remit, task: TaskInfo) -> None:
    d = r.decide("call_tool", tool="jira.read", context={"target": "JIRA-1"})
    assert isinstance(d, Decision)
    assert (d.allowed, d.outcome, d.reasons, d.errors) == (True, ALLOW, ("triage.jira-read",), ())
    assert d.task == task.id and d.tool == "jira.read"
    assert d.policy_version >= 1 and d.approval is None and not d.needs_approval
    assert bool(d) is True
    assert d.raw["outcome"] == "allow"
    assert r.require(tool="jira.read").allowed


def test_a_tool_off_the_workflows_list_is_denied(r: Remit) -> None:
    d = r.decide(tool="slack.post", context={"channel": "#ops"})
    assert (d.allowed, d.outcome, d.reasons) == (False, DENY, ())
    assert any("slack.post" in e and "allowed tools" in e for e in d.errors), d.errors
    assert bool(d) is False
    with pytest.raises(Denied) as e:
        r.require(tool="slack.post")
    assert e.value.outcome == DENY and e.value.decision.outcome == DENY
    assert "slack.post" in str(e.value) and e.value.errors == e.value.decision.errors


def test_an_action_the_schema_does_not_know_is_denied(r: Remit) -> None:
    d = r.decide("delete", tool="jira.read")
    assert d.outcome == DENY and d.reasons == ()
    assert any("unknown action" in e for e in d.errors), d.errors


def test_writing_before_reading_is_denied(r: Remit) -> None:
    d = r.decide(tool="jira.write", context={"target": "JIRA-1"})
    assert (d.outcome, d.reasons) == (DENY, ("triage.read-before-write",))
    with pytest.raises(Denied) as e:
        r.require(tool="jira.write", context={"target": "JIRA-1"})
    assert e.value.reasons == ("triage.read-before-write",)
    assert "triage.read-before-write" in str(e.value)


def test_restricted_data_is_denied(admin: Admin, env: Env) -> None:
    t = admin.start_task(sensitivity="restricted")
    d = Remit(env.url, t.token).decide(tool="jira.read", context={"target": "JIRA-1"})
    assert (d.outcome, d.reasons) == (DENY, ("no-restricted-data",))
    # What the agent says about the data's sensitivity is not what Remit goes by.
    d = Remit(env.url, t.token).decide(tool="jira.read", context={"data_sensitivity": "public"})
    assert d.outcome == DENY


def test_other_resources(r: Remit) -> None:
    # A resource that is not a tool, as a (type, id) pair and as an entity mapping.
    for resource in (("Ticket", "OPS-12"), {"type": "Ticket", "id": "OPS-12", "properties": {"project": "OPS"}}):
        d = r.decide("call_tool", resource=resource)
        assert d.outcome == DENY and d.reasons == (), d
    with pytest.raises(TypeError):
        r.decide(tool="jira.read", resource=("Tool", "jira.read"))
    with pytest.raises(TypeError):
        r.decide()


def test_a_killed_task_is_denied_not_an_error(admin: Admin, env: Env) -> None:
    t = admin.start_task()
    r = Remit(env.url, t.token)
    assert r.decide(tool="jira.read").allowed
    admin.revoke(t.id, "incident 7")
    d = r.decide(tool="jira.read")
    assert (d.allowed, d.outcome) == (False, DENY)
    assert d.task == t.id
    assert any("no longer active" in e for e in d.errors), d.errors
    with pytest.raises(Denied):
        r.require(tool="jira.read")


def test_a_completed_task_is_denied(admin: Admin, env: Env) -> None:
    t = admin.start_task()
    r = Remit(env.url, t.token)
    r.complete_task()
    assert r.decide(tool="jira.read").outcome == DENY


def test_a_garbage_token_is_a_deny(env: Env) -> None:
    # Asking with its own token: a token Remit does not accept is a deny saying why (fail
    # closed), like a killed task's.
    d = Remit(env.url, "garbage").decide(tool="jira.read")
    assert d.outcome == DENY and not d.allowed
    assert d.errors and d.errors[0].startswith("unauthenticated:"), d.errors
    # Anything else with it is an error.
    with pytest.raises(Unauthenticated) as e:
        Remit(env.url, "garbage", task_id="t-" + "0" * 32).task()
    assert e.value.status == 401 and e.value.code == "unauthenticated"


def test_a_gateway_asks_on_the_tasks_behalf(admin: Admin, env: Env, task: TaskInfo) -> None:
    gateway = Remit(env.url, env.admin_token)
    d = gateway.decide(tool="jira.read", context={"target": "JIRA-2"}, subject_token=task.token)
    assert (d.outcome, d.task) == (ALLOW, task.id)
    # A token that is not a task's is a deny for the gateway, not an error…
    d = gateway.decide(tool="jira.read", subject_token="not-a-token")
    assert d.outcome == DENY and d.task is None and d.errors
    # …and so is a killed task's (a normal 200 deny).
    admin.revoke(task.id)
    d = gateway.decide(tool="jira.read", subject_token=task.token)
    assert d.outcome == DENY and any("revoked" in e for e in d.errors), d.errors
    # The gateway's own bad credential is an error.
    with pytest.raises(Unauthenticated):
        Remit(env.url, "remit_admin_wrong").decide(tool="jira.read", subject_token=task.token)


def test_bad_input_is_an_invalid_request(r: Remit) -> None:
    with pytest.raises(InvalidRequest) as e:
        r.decide(tool="")
    assert (e.value.status, e.value.code) == (400, "bad_request")
    assert e.value.message == "`resource.id` is required"
    with pytest.raises(InvalidRequest, match="`action.name` is required"):
        r.decide("", tool="jira.read")
    with pytest.raises(InvalidRequest, match="`context` must be an object"):
        r.decide(tool="jira.read", context=[1])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="approval id"):
        r.approval("garbage")
    with pytest.raises(NotFound) as nf:
        r.approval("a-" + "0" * 32)
    assert nf.value.status == 404 and "not found" in nf.value.message


def test_the_unix_socket(env: Env, task: TaskInfo) -> None:
    if env.admin_socket is None:
        pytest.skip("REMIT_TEST_ADMIN_SOCKET is not set")
    for url in (f"unix:{env.admin_socket}", f"unix://{env.admin_socket}"):
        r = Remit(url, task.token)
        d = r.decide(tool="jira.read", context={"target": "JIRA-3"})
        assert (d.outcome, d.task) == (ALLOW, task.id)
        assert r.task().id == task.id
        with pytest.raises(InvalidRequest):
            r.decide(tool="")
