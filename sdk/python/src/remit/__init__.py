"""Remit's Python SDK for agents: ask before acting, wait for a human, know when to stop.

    from remit import Remit

    r = Remit.from_env()  # the task token `remit exec` hands the agent
    d = r.decide("call_tool", tool="jira.read", context={"target": "JIRA-1"})
    if d.allowed:
        ...  # read the ticket
    print(d.outcome, d.reasons)  # allow ('triage.jira-read',)

Standard library only; Python 3.9+. See README.md for the whole API.
"""

from .client import DEFAULT_URL, Remit, Resource
from .errors import (
    ApprovalRequired,
    ConfigurationError,
    Conflict,
    Denied,
    Forbidden,
    InvalidRequest,
    NotFound,
    RemitError,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from .types import (
    ALLOW,
    APPROVAL_REQUIRED,
    DENY,
    PENDING,
    ApprovalRef,
    ApprovalState,
    Credential,
    Decision,
    Task,
    TaskStatus,
)

__version__ = "0.1.0"

__all__ = [
    "ALLOW",
    "APPROVAL_REQUIRED",
    "DEFAULT_URL",
    "DENY",
    "PENDING",
    "ApprovalRef",
    "ApprovalRequired",
    "ApprovalState",
    "Credential",
    "ConfigurationError",
    "Conflict",
    "Decision",
    "Denied",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "Remit",
    "RemitError",
    "Resource",
    "Task",
    "TaskStatus",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]
