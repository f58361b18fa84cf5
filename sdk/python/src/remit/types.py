"""What Remit answers, as immutable dataclasses: decisions, approval requests and tasks.

Each value keeps the server's JSON in ``raw`` (left out of ``repr`` and comparisons) so a
field this SDK does not know yet is still reachable. Times are timezone-aware
:class:`datetime.datetime` values in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Tuple

__all__ = [
    "ALLOW",
    "DENY",
    "APPROVAL_REQUIRED",
    "PENDING",
    "ApprovalRef",
    "ApprovalState",
    "Decision",
    "Task",
    "TaskStatus",
    "parse_time",
]

#: The four outcomes of a decision.
ALLOW = "allow"
DENY = "deny"
APPROVAL_REQUIRED = "approval_required"
PENDING = "pending"

_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})?$")


def parse_time(value: Any) -> Optional[datetime]:
    """An RFC 3339 timestamp as an aware UTC datetime; ``None`` for ``None`` or garbage."""
    if not isinstance(value, str):
        return None
    m = _RFC3339.match(value.strip())
    if m is None:
        return None
    base, frac, zone = m.groups()
    text = base.replace("t", "T").replace(" ", "T")
    if frac:
        text += "." + (frac + "000000")[:6]
    if zone is None or zone in ("Z", "z"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        return datetime.fromisoformat(text + zone).astimezone(timezone.utc)
    except ValueError:
        return None


def _strs(value: Any) -> Tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(v) for v in value)


def _opt_str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ApprovalRef:
    """The approval request a decision is about.

    Attributes:
        id: the request's id (``a-…``); a human decides it with
            ``remit approval approve <id> --reason …``.
        expires_at: when it expires, if Remit said.
        reasons: why a human must approve (the policies' ``@approval`` texts).
    """

    id: str
    expires_at: Optional[datetime]
    reasons: Tuple[str, ...] = ()

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> "ApprovalRef":
        return cls(id=str(v.get("id", "")), expires_at=parse_time(v.get("expires_at")), reasons=_strs(v.get("reasons")))


@dataclass(frozen=True)
class ApprovalState:
    """Where an approval request stands.

    Attributes:
        id: the request's id.
        state: ``pending``, ``approved``, ``denied``, ``used``, ``expired``, or ``withdrawn`` (the task ended or was killed).
        expires_at: when it expires (an approved one must be used before then).
        decided_by: the human who decided it, once one has.
        reason: their reason.
    """

    id: str
    state: str
    expires_at: Optional[datetime] = None
    decided_by: Optional[str] = None
    reason: Optional[str] = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def decided(self) -> bool:
        """Whether it is no longer waiting for a human (any state but ``pending``)."""
        return self.state != PENDING

    @property
    def approved(self) -> bool:
        """Whether a human approved it and it was not used yet."""
        return self.state == "approved"

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> "ApprovalState":
        # The event stream says `reason`; `GET /v1/approvals/{id}` says `decision_reason`.
        reason = v.get("reason") if v.get("reason") is not None else v.get("decision_reason")
        return cls(
            id=str(v.get("id", "")),
            state=str(v.get("state", PENDING)),
            expires_at=parse_time(v.get("expires_at")),
            decided_by=_opt_str(v.get("decided_by")),
            reason=_opt_str(reason),
            raw=dict(v),
        )


@dataclass(frozen=True)
class Decision:
    """Remit's answer to "may this task do this?".

    Check :attr:`allowed` (or use :meth:`remit.Remit.require`). ``bool(decision)`` is
    ``decision.allowed``, so ``if decision:`` fails closed, but spelling it out reads better.

    Attributes:
        outcome: ``allow``, ``deny``, ``approval_required`` (this call opened an approval
            request: a human must approve it) or ``pending`` (the presented approval still
            waits for a human).
        allowed: ``True`` only for ``allow``.
        policy_version: the policy version that decided (0 when no policy was consulted).
        reasons: ids of the policies that decided.
        errors: why, when Remit said (kill switch, tool not on the workflow's list,
            approval not usable, the token no longer authenticating…).
        task: the task decided for, when Remit knew it.
        tool: the tool recorded as used, on an allow of a tool call.
        approval: the approval request involved, if any.
        approval_state: set by ``decide(..., wait=True)`` when it waited for a human: the
            request's last known state (who decided and why).
    """

    outcome: str
    allowed: bool
    policy_version: int = 0
    reasons: Tuple[str, ...] = ()
    errors: Tuple[str, ...] = ()
    task: Optional[str] = None
    tool: Optional[str] = None
    approval: Optional[ApprovalRef] = None
    approval_state: Optional[ApprovalState] = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def needs_approval(self) -> bool:
        """Whether a human must still approve (``approval_required`` or ``pending``)."""
        return self.outcome in (APPROVAL_REQUIRED, PENDING)

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> "Decision":
        approval = v.get("approval")
        version = v.get("policy_version")
        return cls(
            outcome=str(v.get("outcome") or (ALLOW if v.get("decision") is True else DENY)),
            allowed=v.get("decision") is True,
            policy_version=version if isinstance(version, int) else 0,
            reasons=_strs(v.get("reasons")),
            errors=_strs(v.get("errors")),
            task=_opt_str(v.get("task")),
            tool=_opt_str(v.get("tool")),
            approval=ApprovalRef.from_json(approval) if isinstance(approval, Mapping) else None,
            raw=dict(v),
        )


@dataclass(frozen=True)
class Task:
    """A task: one unit of work with its own short-lived identity.

    Attributes:
        id: ``t-…``.
        workflow: the workflow it belongs to.
        agent: the agent running it.
        state: ``active``, ``completed``, ``revoked`` or ``expired`` (as of now).
        intent: what it is for.
        sensitivity: the most sensitive data it touches.
        spiffe_id: its SPIFFE ID.
        created_at, expires_at, ended_at: its lifetime.
        end_reason: why it ended, once it has.
    """

    id: str
    workflow: str
    agent: str
    state: str
    intent: str = ""
    sensitivity: str = ""
    spiffe_id: str = ""
    created_at: Optional[datetime] = None
    expires_at: Optional[datetime] = None
    ended_at: Optional[datetime] = None
    end_reason: Optional[str] = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def live(self) -> bool:
        """Whether its token is honoured right now (state ``active``)."""
        return self.state == "active"

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> "Task":
        return cls(
            id=str(v.get("id", "")),
            workflow=str(v.get("workflow", "")),
            agent=str(v.get("agent", "")),
            state=str(v.get("state", "")),
            intent=str(v.get("intent", "")),
            sensitivity=str(v.get("sensitivity", "")),
            spiffe_id=str(v.get("spiffe_id", "")),
            created_at=parse_time(v.get("created_at")),
            expires_at=parse_time(v.get("expires_at")),
            ended_at=parse_time(v.get("ended_at")),
            end_reason=_opt_str(v.get("end_reason")),
            raw=dict(v),
        )


@dataclass(frozen=True)
class TaskStatus:
    """Whether a task is live, from its event stream.

    Attributes:
        task: the task's id.
        live: whether its token is honoured right now.
        state: ``active``, ``completed``, ``revoked`` or ``expired``; ``ended`` when the
            SDK only knows the task's token stopped authenticating.
        reason: why it is not live, when it is not.
    """

    task: str
    live: bool
    state: str
    reason: Optional[str] = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> "TaskStatus":
        return cls(
            task=str(v.get("task", "")),
            live=v.get("live") is True,
            state=str(v.get("state", "")),
            reason=_opt_str(v.get("reason")),
            raw=dict(v),
        )


@dataclass(frozen=True)
class Credential:
    """A credential for one tool, from RFC 8693 token exchange (:meth:`remit.Remit.credential`).

    Attributes:
        access_token: the token to send the tool (in no ``repr``).
        token_type: ``Bearer`` (or ``DPoP`` when bound to a key).
        tool: the tool it is for.
        scopes: what the policy granted (fewer than asked when it narrowed them).
        expires_at: when it stops working (never after the task's end).
    """

    access_token: str = field(repr=False)
    token_type: str
    tool: str
    scopes: Tuple[str, ...]
    expires_at: Optional[datetime] = None

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value to send the tool."""
        return f"{self.token_type} {self.access_token}"
