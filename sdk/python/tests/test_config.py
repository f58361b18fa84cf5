"""Setting the client up: the token from the environment or its file, clear errors when
there is none, and the token never showing in a repr, a str or an exception."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Dict

import pytest
from conftest import Env, TaskInfo

from remit import DEFAULT_URL, ConfigurationError, Remit, RemitError, Unauthenticated, Unavailable


def test_from_env_reads_the_token_variable(remit_env: Dict[str, str], task: TaskInfo) -> None:
    r = Remit.from_env(environ=remit_env)
    assert r.url == remit_env["REMIT_URL"]
    assert r.task_id == task.id
    assert r.decide(tool="jira.read").allowed
    assert r.task().id == task.id


def test_from_env_reads_the_token_file(tmp_path: Path, env: Env, task: TaskInfo) -> None:
    f = tmp_path / "token"
    f.write_text(f"\n  {task.token}  \n", encoding="utf-8")
    r = Remit.from_env(environ={"REMIT_URL": env.url, "REMIT_TASK_TOKEN_FILE": str(f)})
    assert r.decide(tool="jira.read").allowed
    # Without REMIT_TASK_ID the task's id is read from the token.
    assert r.task_id == task.id


def test_the_variable_wins_over_the_file(tmp_path: Path, env: Env, task: TaskInfo) -> None:
    f = tmp_path / "token"
    f.write_text("not-the-token", encoding="utf-8")
    r = Remit.from_env(environ={"REMIT_URL": env.url, "REMIT_TASK_TOKEN": task.token, "REMIT_TASK_TOKEN_FILE": str(f)})
    assert r.decide(tool="jira.read").allowed


def test_no_token_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="REMIT_TASK_TOKEN or REMIT_TASK_TOKEN_FILE"):
        Remit.from_env(environ={"REMIT_URL": "http://127.0.0.1:1"})
    with pytest.raises(ConfigurationError, match="REMIT_TASK_TOKEN or REMIT_TASK_TOKEN_FILE"):
        Remit.from_env(environ={"REMIT_TASK_TOKEN": "  "})
    missing = tmp_path / "nope"
    with pytest.raises(ConfigurationError, match="cannot read REMIT_TASK_TOKEN_FILE"):
        Remit.from_env(environ={"REMIT_TASK_TOKEN_FILE": str(missing)})
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is empty"):
        Remit.from_env(environ={"REMIT_TASK_TOKEN_FILE": str(empty)})
    with pytest.raises(ConfigurationError, match="no token"):
        Remit("http://127.0.0.1:1", "")
    # A ConfigurationError is a ValueError too, and a RemitError.
    assert issubclass(ConfigurationError, ValueError) and issubclass(ConfigurationError, RemitError)


def test_urls() -> None:
    assert Remit.from_env(environ={"REMIT_TASK_TOKEN": "x"}).url == DEFAULT_URL
    assert Remit("http://remit.example:8443/", "x").url == "http://remit.example:8443"
    assert Remit("unix:///run/remit.sock", "x").url == "unix:///run/remit.sock"
    for bad in ("ftp://x", "remit.example", "unix:relative.sock", "http://u:p@host", "http://host:99999"):
        with pytest.raises(ConfigurationError):
            Remit(bad, "x")


def test_the_token_never_shows(env: Env, task: TaskInfo) -> None:
    r = Remit(env.url, task.token)
    assert task.token not in repr(r) and task.token not in str(r)
    assert repr(r) == f"Remit(url={env.url!r})"
    d = r.decide(tool="jira.read")
    assert task.token not in repr(d)

    # Refused by the server: the exception says so without the token.
    forged = task.token[:-4] + ("AAAA" if not task.token.endswith("AAAA") else "BBBB")
    gateway = Remit(env.url, forged)
    with pytest.raises(Unauthenticated) as e:
        gateway.decide(tool="jira.read", subject_token=task.token)
    for text in (str(e.value), repr(e.value), e.value.message):
        assert forged not in text and task.token not in text

    # Nobody listening: Unavailable, naming the URL, not the token.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(Unavailable) as u:
        Remit(f"http://127.0.0.1:{port}", task.token, timeout=5).decide(tool="jira.read")
    assert u.value.status is None and u.value.code == "unreachable"
    assert f"127.0.0.1:{port}" in str(u.value)
    for text in (str(u.value), repr(u.value)):
        assert task.token not in text
