"""Per-tool credentials (RFC 8693 token exchange) through the SDK, against the real server."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict

import pytest

from remit import ApprovalRequired, InvalidRequest, Remit

from conftest import Admin, Env, TaskInfo, later

AUDIENCES = {"jira.read": "https://jira.example/read", "jira.write": "https://jira.example/write"}


@pytest.fixture(scope="session")
def tools(admin: Admin) -> None:
    """The triage workflow's two tools, registered once (each takes the `call_tool` scope)."""
    for name, aud in AUDIENCES.items():
        status, v = admin.call(
            "POST", "/v1/tools", {"name": name, "audience": aud, "scopes": ["call_tool"], "owner": "alice@example.com"}
        )
        assert status in (201, 409), f"registering {name}: {status} {v}"


def claims(token: str) -> Dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_a_task_gets_a_credential_for_one_tool(env: Env, task: TaskInfo, tools: None) -> None:
    r = Remit(env.url, task.token)
    c = r.credential("jira.read", ["call_tool"])
    assert c.scopes == ("call_tool",) and c.token_type == "Bearer" and c.tool == "jira.read"
    assert c.authorization.startswith("Bearer ")
    assert c.access_token not in repr(c), "the credential is in no repr"
    got = claims(c.access_token)
    assert got["aud"] == [AUDIENCES["jira.read"]]
    assert got["https://remit.dev/claims"]["kind"] == "tool"
    assert got["https://remit.dev/claims"]["task"] == task.id
    assert c.expires_at is not None


def test_a_scope_that_needs_a_human_raises_then_waits(env: Env, admin: Admin, task: TaskInfo, tools: None) -> None:
    r = Remit(env.url, task.token)
    r.credential("jira.read", ["call_tool"])  # look before you write
    with pytest.raises(ApprovalRequired) as e:
        r.credential("jira.write", ["call_tool"])
    assert e.value.code == "invalid_scope" and e.value.approval_ids
    assert all(a in e.value.message for a in e.value.approval_ids)
    # With wait=True: the SDK waits for the human (approving in a moment), then retries.
    pending = {a["id"] for a in admin.pending_approvals()}

    def approve_new() -> None:
        for a in admin.pending_approvals():
            if a["id"] not in pending:
                admin.approve(a["id"])

    later(1.0, approve_new)
    c = r.credential("jira.write", ["call_tool"], wait=True, timeout=60)
    assert c.scopes == ("call_tool",)


def test_refusals_carry_the_oauth_error(env: Env, task: TaskInfo, tools: None) -> None:
    r = Remit(env.url, task.token)
    with pytest.raises(InvalidRequest) as e:
        r.credential("no-such-tool")
    assert e.value.code == "invalid_target"
    with pytest.raises(InvalidRequest) as e:
        r.credential("jira.read", ["admin"])
    assert e.value.code == "invalid_scope"
    assert task.token not in str(e.value)
