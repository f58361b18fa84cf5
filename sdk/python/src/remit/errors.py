"""The exceptions the SDK raises. Every one is a :class:`RemitError`.

HTTP answers map by status: 400 :class:`InvalidRequest`, 401 :class:`Unauthenticated`,
403 :class:`Forbidden`, 404 :class:`NotFound`, 409 :class:`Conflict`, 503
:class:`Unavailable`; any other non-2xx answer is a plain :class:`RemitError`. A server that
cannot be reached (refused, reset, DNS, TLS) is also :class:`Unavailable` (``status`` is
``None``), and a request that got no answer in time is :class:`Timeout`, a subclass of it.

:class:`Denied` is not an HTTP error: :meth:`remit.Remit.require` raises it when Remit
answered, and the answer was not "allow".

No message, ``str()`` or ``repr()`` of these exceptions ever contains a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:
    from .types import Decision

__all__ = [
    "RemitError",
    "ApprovalRequired",
    "ConfigurationError",
    "InvalidRequest",
    "Unauthenticated",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Unavailable",
    "Timeout",
    "Denied",
    "error_for_status",
]


class RemitError(Exception):
    """Base class of every SDK error.

    Attributes:
        status: the HTTP status of the answer, or ``None`` when there was none.
        code: Remit's machine-readable code (``bad_request``, ``unauthenticated``, …).
        message: the human-readable message (the server's, when it sent one).
    """

    status: Optional[int]
    code: str
    message: str

    def __init__(self, message: str, *, status: Optional[int] = None, code: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        if self.status is None:
            return f"{self.code}: {self.message}"
        return f"{self.status} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class ApprovalRequired(RemitError):
    """A credential's scope needs a human's approval first (400 ``invalid_scope`` naming the
    requests): ``approval_ids`` are the requests to wait for (:meth:`remit.Remit.wait_for_approval`)
    and present again (``approvals=``)."""

    approval_ids: Tuple[str, ...]

    def __init__(self, message: str, *, status: Optional[int] = None, code: str = "error",
                 approval_ids: Tuple[str, ...] = ()) -> None:
        super().__init__(message, status=status, code=code)
        self.approval_ids = approval_ids


class ConfigurationError(RemitError, ValueError):
    """The client is not set up to talk to Remit: no token, a URL it cannot use, no task id."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="configuration")


class InvalidRequest(RemitError):
    """400: Remit refused the request as malformed; ``message`` says what is wrong."""


class Unauthenticated(RemitError):
    """401: the bearer token is not (or no longer) a credential Remit accepts."""


class Forbidden(RemitError):
    """403: the caller is authenticated but may not do this (e.g. another task's data)."""


class NotFound(RemitError):
    """404: no such task, approval or endpoint (or not one the caller may see)."""


class Conflict(RemitError):
    """409: the request conflicts with the current state (e.g. the task already ended)."""


class Unavailable(RemitError):
    """503, or Remit could not be reached at all (then ``status`` is ``None``).

    Attributes:
        retry_after: seconds the server asked to wait before retrying (``Retry-After``),
            when it said.
    """

    retry_after: Optional[float]

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: str = "unavailable",
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class Timeout(Unavailable):
    """A request got no answer within the client's ``timeout`` (``status`` is ``None``)."""


class Denied(RemitError):
    """Raised by :meth:`remit.Remit.require` when the decision was not "allow".

    Attributes:
        decision: the full :class:`remit.Decision`.
        outcome: ``deny``, ``approval_required`` or ``pending``.
        reasons: the ids of the policies that decided.
        errors: why, when Remit said (kill switch, tool not allowed, approval not usable…).
    """

    decision: "Decision"

    def __init__(self, decision: "Decision") -> None:
        parts = [decision.outcome.replace("_", " ")]
        if decision.reasons:
            parts.append(f"(by {', '.join(decision.reasons)})")
        text = " ".join(parts)
        if decision.errors:
            text += ": " + "; ".join(decision.errors)
        super().__init__(text, status=None, code=decision.outcome)
        self.decision = decision

    @property
    def outcome(self) -> str:
        return self.decision.outcome

    @property
    def reasons(self) -> "tuple[str, ...]":
        return self.decision.reasons

    @property
    def errors(self) -> "tuple[str, ...]":
        return self.decision.errors


_BY_STATUS = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


def error_for_status(status: int, code: str, message: str, *, retry_after: Optional[float] = None) -> RemitError:
    """The exception for a non-2xx answer with Remit's ``{"error", "message"}`` body."""
    if status == 503:
        return Unavailable(message, status=status, code=code, retry_after=retry_after)
    cls = _BY_STATUS.get(status, RemitError)
    return cls(message, status=status, code=code)
