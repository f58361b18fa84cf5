"""HTTP/1.1 to Remit over TCP, TLS or a Unix socket, with the standard library only.

One connection per request (the client is safe to share between threads). JSON calls map
non-2xx answers to :mod:`remit.errors`; :meth:`Transport.events` reads a Server-Sent Events
stream as it arrives. The bearer token goes in the ``Authorization`` header and nowhere
else: it is scrubbed from every error message, and this module never logs.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any, Dict, Generator, List, Mapping, Optional, Tuple, Union

from .errors import ApprovalRequired, ConfigurationError, RemitError, Timeout, Unavailable, error_for_status

__all__ = ["Endpoint", "Transport", "SseEvent", "USER_AGENT"]

USER_AGENT = "remit-sdk-python/0.1.0"

Connection = Union[http.client.HTTPConnection, http.client.HTTPSConnection]


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a Unix socket (``Host: localhost``)."""

    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Endpoint:
    """Where Remit is: ``http``/``https`` with host, port and path prefix, or a Unix socket."""

    scheme: str
    host: str
    port: Optional[int]
    prefix: str
    unix_path: Optional[str]

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        url = url.strip()
        if url.startswith("unix:"):
            path = url[len("unix:") :]
            if path.startswith("//"):
                path = path[2:]
            if not path.startswith("/"):
                raise ConfigurationError(f"unix socket URL must name an absolute path: {url!r}")
            return cls("unix", "localhost", None, "", path)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"Remit URL must be http://, https:// or unix:/path, not {url!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ConfigurationError("Remit URL must not carry credentials, a query or a fragment")
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError(f"Remit URL has an invalid port: {url!r}") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"), None)


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event: its ``event`` name and its ``data`` (lines joined by ``\\n``)."""

    event: str
    data: str


def _approval_ids(raw: bytes) -> Tuple[str, ...]:
    """The approval requests an OAuth error names (Remit's `approval_ids`), if any."""
    try:
        v = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return ()
    ids = v.get("approval_ids") if isinstance(v, Mapping) else None
    return tuple(str(i) for i in ids) if isinstance(ids, list) else ()


def _retry_after(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None  # an HTTP-date: not worth parsing here


class Transport:
    """Requests to one Remit endpoint with one bearer token."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.url = url.strip().rstrip("/") if not url.strip().startswith("unix:") else url.strip()
        self.endpoint = Endpoint.parse(url)
        self._token = token
        self.timeout = timeout
        self._ssl = ssl_context

    # ------------------------------------------------------------------ plumbing

    def _connect(self, timeout: Optional[float]) -> Connection:
        e = self.endpoint
        if e.unix_path is not None:
            return _UnixHTTPConnection(e.unix_path, timeout)
        if e.scheme == "https":
            ctx = self._ssl if self._ssl is not None else ssl.create_default_context()
            return http.client.HTTPSConnection(e.host, e.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(e.host, e.port, timeout=timeout)

    def scrub(self, text: str) -> str:
        """``text`` with the token cut out (defence in depth: Remit never echoes it)."""
        if self._token and self._token in text:
            text = text.replace(self._token, "[token]")
        return text

    def _headers(self, accept: str, content_type: Optional[str]) -> Dict[str, str]:
        h = {"Authorization": f"Bearer {self._token}", "Accept": accept, "User-Agent": USER_AGENT}
        if content_type is not None:
            h["Content-Type"] = content_type
        return h

    def _unreachable(self, exc: BaseException, waited: Optional[float]) -> RemitError:
        if isinstance(exc, socket.timeout):
            return Timeout(f"no answer from Remit at {self.url} within {waited or 0:g}s", code="timeout")
        detail = self.scrub(str(exc) or type(exc).__name__)
        return Unavailable(f"cannot reach Remit at {self.url}: {detail}", code="unreachable")

    def _error(self, resp: http.client.HTTPResponse, body: bytes) -> RemitError:
        code, message = f"http_{resp.status}", ""
        try:
            v = json.loads(body.decode("utf-8"))
            if isinstance(v, Mapping):
                code = str(v.get("error") or code)
                # Remit's errors say `message`; the OAuth endpoints' (RFC 6749 §5.2) `error_description`.
                message = str(v.get("message") or v.get("error_description") or "")
                if v.get("error_id"):
                    message = f"{message or 'internal error'} (error id {v['error_id']})"
        except (ValueError, UnicodeDecodeError):
            message = body[:200].decode("utf-8", "replace").strip()
        message = self.scrub(message or resp.reason or "no message")
        return error_for_status(resp.status, code, message, retry_after=_retry_after(resp.getheader("Retry-After")))

    def _open(
        self,
        method: str,
        path: str,
        body: Optional[bytes],
        accept: str,
        timeout: Optional[float],
        content_type: str = "application/json",
    ) -> Tuple[Connection, http.client.HTTPResponse]:
        conn = self._connect(timeout)
        try:
            headers = self._headers(accept, content_type if body is not None else None)
            conn.request(method, self.endpoint.prefix + path, body=body, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._unreachable(exc, timeout) from None

    # ------------------------------------------------------------------ JSON calls

    def call(self, method: str, path: str, body: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """One JSON request; the answer's JSON object, or the mapped error."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        return self._json_answer(method, path, data, "application/json")

    def form(self, path: str, fields: List[Tuple[str, str]]) -> Dict[str, Any]:
        """One ``application/x-www-form-urlencoded`` POST (the OAuth endpoints); the answer's
        JSON object, or the mapped error (an error naming approval requests raises
        :class:`~remit.errors.ApprovalRequired`)."""
        data = urllib.parse.urlencode(fields).encode("ascii")
        return self._json_answer("POST", path, data, "application/x-www-form-urlencoded")

    def _json_answer(self, method: str, path: str, data: Optional[bytes], content_type: str) -> Dict[str, Any]:
        conn, resp = self._open(method, path, data, "application/json", self.timeout, content_type)
        try:
            try:
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc, self.timeout) from None
            if not 200 <= resp.status < 300:
                err = self._error(resp, raw)
                ids = _approval_ids(raw)
                if ids:
                    raise ApprovalRequired(err.message, status=resp.status, code=err.code, approval_ids=ids)
                raise err
            if not raw.strip():
                return {}
            try:
                v = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise RemitError("Remit's answer is not JSON", status=resp.status, code="bad_answer") from None
            if not isinstance(v, dict):
                raise RemitError(
                    "Remit answered with JSON that is not an object", status=resp.status, code="bad_answer"
                )
            return v
        finally:
            conn.close()

    # ------------------------------------------------------------------ event streams

    def events(self, path: str, idle: float) -> Generator[SseEvent, None, None]:
        """Opens ``path`` as an event stream and yields its events until it ends.

        A non-2xx answer raises the mapped error before the first event. A read that stays
        silent for ``idle`` seconds raises :class:`~remit.errors.Timeout`; the connection
        dropping raises :class:`~remit.errors.Unavailable`; a clean end just stops.
        Comments (keep-alives) are skipped.
        """
        conn, resp = self._open("GET", path, None, "text/event-stream", idle)
        try:
            if not 200 <= resp.status < 300:
                try:
                    raw = resp.read()
                except (OSError, http.client.HTTPException):
                    raw = b""
                raise self._error(resp, raw)
            event: str = ""
            data: List[str] = []
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise self._unreachable(exc, idle) from None
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if not text:
                    if data:
                        yield SseEvent(event or "message", "\n".join(data))
                    event, data = "", []
                elif text.startswith(":"):
                    continue
                else:
                    name, _, value = text.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
        finally:
            conn.close()
