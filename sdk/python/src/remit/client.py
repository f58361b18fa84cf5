"""The client an agent uses: :class:`Remit`.

An agent asks Remit before each action (:meth:`Remit.decide`), waits for a human when a
policy says one must approve (``wait=True`` or :meth:`Remit.wait_for_approval`), and can
read, end and watch its own task. It authenticates with its task token, which
``remit exec`` hands it (:meth:`Remit.from_env`).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import time
from contextlib import closing
from dataclasses import replace
from typing import Any, Callable, Dict, Generator, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from ._http import Transport
from .errors import ApprovalRequired, ConfigurationError, Denied, RemitError, Unauthenticated, Unavailable
from .types import DENY, PENDING, ApprovalState, Credential, Decision, Task, TaskStatus

__all__ = ["Remit", "DEFAULT_URL", "Resource"]

#: Where Remit listens unless ``REMIT_URL`` (or ``url=``) says otherwise.
DEFAULT_URL = "http://127.0.0.1:7878"

#: A resource: ``("Ticket", "OPS-12")``, or ``{"type": …, "id": …, "properties": {…}}``.
Resource = Union[Tuple[str, str], Mapping[str, Any]]

# Longest silence on an event stream before it is reopened (Remit sends a keep-alive every 15 s).
_IDLE = 45.0
# Pause before reopening a dropped event stream: doubles from the first to the last.
_BACKOFF_FIRST, _BACKOFF_MAX = 0.25, 5.0
# How many times decide(wait=True) waits for a human before it returns what it has.
_MAX_ROUNDS = 3


def _task_of(token: str) -> Optional[str]:
    """The task id a task token names (read from its claims, NOT verified: only a hint)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        task = claims["https://remit.dev/claims"]["task"]
        return task if isinstance(task, str) and task else None
    except (IndexError, KeyError, TypeError, ValueError):
        return None


class Remit:
    """A client for one task (or, with ``subject_token``, for a gateway asking on a task's behalf).

    Args:
        url: ``http://host:port``, ``https://…`` or ``unix:/path/to/socket``.
        token: the bearer token: the task's own token (an agent), or the gateway's.
        timeout: seconds each plain request may take.
        task_id: the task's id, for :meth:`task`, :meth:`complete_task` and
            :meth:`task_ended`; read from the token's claims when not given.
        ssl_context: for ``https``; the system's default trust store when not given
            (``SSL_CERT_FILE`` points it elsewhere).

    The token appears in no ``repr``, ``str``, exception or log. One instance may be shared
    between threads: every request opens its own connection.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        task_id: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        token = (token or "").strip()
        if not token:
            raise ConfigurationError("no token: pass token=… (an agent's is its task token, REMIT_TASK_TOKEN)")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        self._http = Transport(url, token, timeout=timeout, ssl_context=ssl_context)
        self._task_id = task_id or _task_of(token)

    @classmethod
    def from_env(
        cls,
        *,
        timeout: float = 30.0,
        environ: Optional[Mapping[str, str]] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> "Remit":
        """A client from what ``remit exec`` hands the command it runs.

        ``REMIT_URL`` (default ``http://127.0.0.1:7878``); the token from
        ``REMIT_TASK_TOKEN``, else from the file ``REMIT_TASK_TOKEN_FILE`` names (surrounding
        whitespace trimmed); the task id from ``REMIT_TASK_ID`` when set.

        Raises:
            ConfigurationError: no token, or its file cannot be read.
        """
        env = os.environ if environ is None else environ
        token = env.get("REMIT_TASK_TOKEN", "").strip()
        if not token:
            path = env.get("REMIT_TASK_TOKEN_FILE", "").strip()
            if not path:
                raise ConfigurationError(
                    "no task token: set REMIT_TASK_TOKEN or REMIT_TASK_TOKEN_FILE "
                    "(`remit exec` sets both for the command it runs)"
                )
            try:
                with open(path, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError as e:
                raise ConfigurationError(f"cannot read REMIT_TASK_TOKEN_FILE {path}: {e.strerror or e}") from None
            if not token:
                raise ConfigurationError(f"REMIT_TASK_TOKEN_FILE {path} is empty")
        url = env.get("REMIT_URL", "").strip() or DEFAULT_URL
        task_id = env.get("REMIT_TASK_ID", "").strip() or None
        return cls(url, token, timeout=timeout, task_id=task_id, ssl_context=ssl_context)

    def __repr__(self) -> str:
        return f"Remit(url={self._http.url!r})"

    @property
    def url(self) -> str:
        """The Remit URL this client talks to."""
        return self._http.url

    @property
    def task_id(self) -> Optional[str]:
        """The task this client acts for, when known."""
        return self._task_id

    # ------------------------------------------------------------------ per-tool credentials

    def credential(
        self,
        tool: str,
        scopes: Optional[Sequence[str]] = None,
        *,
        approvals: Sequence[str] = (),
        wait: bool = False,
        timeout: Optional[float] = 900.0,
    ) -> Credential:
        """Trades this task's token for a credential for one tool (RFC 8693 token exchange).

        Args:
            tool: the tool's name (or audience URI).
            scopes: the scopes wanted (each decided by the policy); all the tool accepts that
                the policy grants outright when not given.
            approvals: approval requests a human approved for scopes that needed one.
            wait: when a scope needs a human, wait for the decision(s) on the approval's event
                stream, then ask again presenting them.
            timeout: how long ``wait`` waits for the humans.

        Raises:
            ApprovalRequired: a scope needs approval (``approval_ids`` name the requests), and
                ``wait`` is off or a human denied it.
            InvalidRequest: refused (``code`` is the OAuth error: ``invalid_target``,
                ``invalid_scope``, ``invalid_request``; ``message`` says why).
        """
        fields = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", self._http._token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("audience", tool),
        ]
        if scopes:
            fields.append(("scope", " ".join(scopes)))
        try:
            v = self._http.form("/oauth2/token", fields + [("approval", a) for a in approvals])
        except ApprovalRequired as e:
            if not wait:
                raise
            for a in e.approval_ids:
                state = self.wait_for_approval(a, timeout=timeout)
                if not state.approved:
                    raise
            return self.credential(tool, scopes, approvals=tuple(approvals) + e.approval_ids, timeout=timeout)
        expires_in = v.get("expires_in")
        expires = None
        if isinstance(expires_in, int):
            from datetime import datetime, timedelta, timezone

            expires = datetime.now(timezone.utc) + timedelta(seconds=expires_in)
        return Credential(
            access_token=str(v.get("access_token", "")),
            token_type=str(v.get("token_type", "Bearer")),
            tool=tool,
            scopes=tuple(str(v.get("scope", "")).split()),
            expires_at=expires,
        )

    # ------------------------------------------------------------------ decisions

    def decide(
        self,
        action: str = "call_tool",
        *,
        tool: Optional[str] = None,
        resource: Optional[Resource] = None,
        context: Optional[Mapping[str, Any]] = None,
        approval: Optional[str] = None,
        wait: bool = False,
        wait_timeout: Optional[float] = 900.0,
        on_wait: Optional[Callable[[Decision], None]] = None,
        subject_token: Optional[str] = None,
    ) -> Decision:
        """Asks whether the task may take ``action`` on a tool or resource.

        Args:
            action: the action's name (``call_tool`` for a tool call).
            tool: the tool: the resource ``Tool::"<tool>"``. Name ``tool`` or ``resource``.
            resource: ``(type, id)`` or an AuthZEN entity mapping.
            context: facts the policies may read (``target``, arguments…); the facts Remit
                vouches for itself (sensitivity, tools used, …) override any sent here.
            approval: the id of an approved request, on the retry of a call that needed one.
            wait: if a human must approve, wait for their decision, then ask again
                presenting the approval, and return that final answer.
            wait_timeout: how long ``wait`` waits in all (``None``: no limit; the request's
                own expiry ends it anyway). When it runs out the answer is ``pending``.
            on_wait: called with the ``approval_required``/``pending`` decision each time
                ``wait`` starts waiting (e.g. to tell a human which request to approve).
            subject_token: ask on behalf of the task holding this token (a gateway); this
                client's own token then only authenticates the gateway.

        Returns:
            The :class:`Decision`. A deny is an answer, not an exception; so is a task
            token that no longer authenticates (task completed, revoked or expired): a
            ``deny`` whose ``errors`` say why. When ``wait`` saw a human deny the request
            (or it expired or was used elsewhere) the answer is a ``deny`` saying so, with
            ``approval_state`` telling who decided and why.

        Raises:
            InvalidRequest: Remit refused the request (its message says why).
            Unavailable: Remit could not be reached.
            Unauthenticated: with ``subject_token``, the gateway's own credential was refused.
        """
        body = self._body(action, tool, resource, context, subject_token)
        d = self._ask(body, approval, subject_token is not None)
        if not wait:
            return d
        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        for _ in range(_MAX_ROUNDS):
            if not d.needs_approval or d.approval is None or not d.approval.id:
                return d
            if on_wait is not None:
                on_wait(d)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                state = self.wait_for_approval(d.approval.id, timeout=left)
            except Unauthenticated as e:
                if subject_token is not None:
                    raise
                return self._unauthenticated(e)
            if state.state == PENDING:
                return replace(d, outcome=PENDING, approval_state=state)
            if not state.approved:
                why = f"approval {state.id} was {state.state}"
                if state.decided_by:
                    why += f" by {state.decided_by}"
                if state.reason:
                    why += f": {state.reason}"
                return replace(d, outcome=DENY, allowed=False, reasons=(), errors=(why,), approval_state=state)
            d = replace(self._ask(body, state.id, subject_token is not None), approval_state=state)
        return d

    def require(
        self,
        action: str = "call_tool",
        *,
        tool: Optional[str] = None,
        resource: Optional[Resource] = None,
        context: Optional[Mapping[str, Any]] = None,
        approval: Optional[str] = None,
        wait: bool = False,
        wait_timeout: Optional[float] = 900.0,
        on_wait: Optional[Callable[[Decision], None]] = None,
        subject_token: Optional[str] = None,
    ) -> Decision:
        """:meth:`decide`, raising :class:`~remit.errors.Denied` unless the answer is allow."""
        d = self.decide(
            action,
            tool=tool,
            resource=resource,
            context=context,
            approval=approval,
            wait=wait,
            wait_timeout=wait_timeout,
            on_wait=on_wait,
            subject_token=subject_token,
        )
        if not d.allowed:
            raise Denied(d)
        return d

    @staticmethod
    def _body(
        action: str,
        tool: Optional[str],
        resource: Optional[Resource],
        context: Optional[Mapping[str, Any]],
        subject_token: Optional[str],
    ) -> Dict[str, Any]:
        if (tool is None) == (resource is None):
            raise TypeError("name exactly one of tool=… or resource=…")
        if tool is not None:
            res: Dict[str, Any] = {"type": "Tool", "id": tool}
        elif isinstance(resource, tuple):
            if len(resource) != 2:
                raise ValueError("resource=(type, id) takes exactly two items")
            res = {"type": resource[0], "id": resource[1]}
        else:
            res = dict(resource or {})
        body: Dict[str, Any] = {"action": {"name": action}, "resource": res}
        body["context"] = dict(context) if isinstance(context, Mapping) else ({} if context is None else context)
        if subject_token is not None:
            body["token"] = subject_token
        return body

    def _ask(self, body: Mapping[str, Any], approval: Optional[str], gateway: bool) -> Decision:
        req = dict(body)
        if approval is not None:
            req["approval"] = approval
        try:
            return Decision.from_json(self._http.call("POST", "/v1/decisions", req))
        except Unauthenticated as e:
            if gateway:
                raise
            return self._unauthenticated(e)

    def _unauthenticated(self, e: Unauthenticated) -> Decision:
        """The deny for a task whose own token no longer authenticates (fail closed)."""
        return Decision(outcome=DENY, allowed=False, errors=(f"unauthenticated: {e.message}",), task=self._task_id)

    # ------------------------------------------------------------------ approvals

    def approval(self, approval_id: str) -> ApprovalState:
        """Where an approval request of this task stands, now."""
        return ApprovalState.from_json(self._http.call("GET", f"/v1/approvals/{_seg(approval_id)}"))

    def wait_for_approval(self, approval_id: str, *, timeout: Optional[float] = 900.0) -> ApprovalState:
        """Waits until a human decides an approval request (or it expires or gets used).

        Follows ``/v1/approvals/{id}/events``. A dropped stream (a server restart, a network
        blip, a silent connection) is reopened with backoff and never taken as a decision.

        Args:
            timeout: seconds to wait in all; ``None`` waits as long as it takes.

        Returns:
            The request's state: ``approved``, ``denied``, ``used``, ``expired`` or ``withdrawn``; or
            ``pending`` (the last state seen) if ``timeout`` ran out first.

        Raises:
            Unauthenticated, Forbidden, NotFound, InvalidRequest: the request cannot be
                watched with this token (e.g. the task's token stopped authenticating).
        """
        last = ApprovalState(id=approval_id, state=PENDING)
        with closing(self._follow(f"/v1/approvals/{_seg(approval_id)}/events", timeout)) as states:
            for v in states:
                last = ApprovalState.from_json(v)
                if last.decided:
                    return last
        return last

    # ------------------------------------------------------------------ the task

    def task(self, task_id: Optional[str] = None) -> Task:
        """The task (this client's own, unless ``task_id`` names one the token may read)."""
        return Task.from_json(self._http.call("GET", f"/v1/tasks/{_seg(self._need_task(task_id))}"))

    def complete_task(self, task_id: Optional[str] = None) -> None:
        """Ends the task: its token is inactive from now on (``remit exec`` does this itself
        when its command exits).

        Raises:
            Conflict: the task had already ended.
        """
        self._http.call("POST", f"/v1/tasks/{_seg(self._need_task(task_id))}/complete", {})

    def task_ended(self, timeout: Optional[float] = None, task_id: Optional[str] = None) -> Optional[TaskStatus]:
        """Waits until the task stops being live (completed, revoked, expired, or killed with
        its agent, instance or workflow) and says how; ``None`` if ``timeout`` ran out first.

        Returns at once if the task has already ended, including when its token no longer
        authenticates (then ``state`` is ``ended`` and ``reason`` is Remit's message).
        """
        tid = self._need_task(task_id)
        try:
            with closing(self._follow(f"/v1/tasks/{_seg(tid)}/events", timeout)) as states:
                for v in states:
                    status = TaskStatus.from_json(v)
                    if not status.live:
                        return status
        except Unauthenticated as e:
            return TaskStatus(task=tid, live=False, state="ended", reason=e.message)
        return None

    def _need_task(self, task_id: Optional[str]) -> str:
        tid = task_id or self._task_id
        if not tid:
            raise ConfigurationError("no task id: pass task_id=… or set REMIT_TASK_ID")
        return tid

    # ------------------------------------------------------------------ event streams

    def _follow(self, path: str, timeout: Optional[float]) -> Generator[Dict[str, Any], None, None]:
        """Yields the JSON of each ``state`` event on ``path``, reopening a dropped stream
        with backoff, until ``timeout`` runs out. 4xx answers raise; 5xx and connection
        failures are retried."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = _BACKOFF_FIRST

        def left() -> Optional[float]:
            return None if deadline is None else deadline - time.monotonic()

        while True:
            remaining = left()
            if remaining is not None and remaining <= 0:
                return
            idle = _IDLE if remaining is None else min(_IDLE, remaining)
            retry_after = 0.0
            stream = self._http.events(path, idle)
            try:
                for ev in stream:
                    if ev.event != "state":
                        continue
                    try:
                        v = json.loads(ev.data)
                    except ValueError:
                        continue
                    if isinstance(v, dict):
                        backoff = _BACKOFF_FIRST
                        yield v
            except Unavailable as e:  # unreachable, 503, or silent for too long: reopen
                retry_after = e.retry_after or 0.0
            except RemitError as e:
                if e.status is None or e.status < 500:
                    raise
            finally:
                stream.close()
            remaining = left()
            if remaining is not None and remaining <= 0:
                return
            pause = max(backoff, retry_after)
            time.sleep(pause if remaining is None else min(pause, remaining))
            backoff = min(backoff * 2, _BACKOFF_MAX)


def _seg(value: str) -> str:
    """``value`` as one URL path segment."""
    return quote(value, safe="")
