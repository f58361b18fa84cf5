#!/usr/bin/env python3
"""A triage agent that asks Remit before every action (it never calls Jira itself).

It reads ticket JIRA-101, then asks to comment on it. Under the triage policies
(examples/agents/policies/triage.cedar) the read is allowed at once; the write needs a human's
approval, so the agent says which request to approve and waits for the decision.

Run it as a task of the `triage` workflow; `remit exec` hands it its task token (on your own
machine, where the agent could read the admin credential, `remit exec` also wants
`--local-demo`; in production run it as another user with `--user`):

    remit exec --local-demo --workflow triage --intent "triage new tickets" -- \
        python3 examples/agents/triage_agent.py

and approve its request from another terminal, as the workflow's owner:

    remit --operator alice@example.com approval approve a-… --reason "comment looks right"

Exit code: 0 the write was allowed, 3 it was denied, 7 nobody decided in time, 1 Remit
could not be asked.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from remit import Decision, Remit, RemitError
except ImportError:  # run from a clone without `pip install ./sdk/python`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python" / "src"))
    from remit import Decision, Remit, RemitError

TICKET = "JIRA-101"
OWNER = "alice@example.com"  # the triage workflow's owner: the human who approves
WAIT_SECONDS = 900.0


def say(text: str) -> None:
    print(text, flush=True)


def describe(d: Decision) -> str:
    """`allow (by triage.jira-read)`, `deny: tool … is not among …`, and so on."""
    text = d.outcome.replace("_", " ")
    if d.reasons:
        text += f" (by {', '.join(d.reasons)})"
    if d.errors:
        text += ": " + "; ".join(d.errors)
    return text


def waiting_for_human(d: Decision) -> None:
    assert d.approval is not None
    expires = d.approval.expires_at.strftime("%H:%M:%S UTC") if d.approval.expires_at else "unknown"
    say(f"write {TICKET}: waiting for a human to approve {d.approval.id} (expires {expires})")
    say(f"  why: {'; '.join(d.approval.reasons) or 'a policy requires approval'}")
    say(f"  approve: remit --operator {OWNER} approval approve {d.approval.id} --reason '…'")
    say(f"  deny:    remit --operator {OWNER} approval deny {d.approval.id} --reason '…'")


def main() -> int:
    remit = Remit.from_env()
    say(f"triage agent, task {remit.task_id or '?'}, asking {remit.url}")

    read = remit.decide("call_tool", tool="jira.read", context={"target": TICKET})
    say(f"read {TICKET}: {describe(read)}")
    if not read.allowed:
        return 3
    # ... here the agent would fetch the ticket from Jira ...

    comment = {"target": TICKET, "comment": "Looks like a duplicate of JIRA-99."}
    write = remit.decide(
        "call_tool", tool="jira.write", context=comment, wait=True, wait_timeout=WAIT_SECONDS, on_wait=waiting_for_human
    )
    st = write.approval_state
    if st is not None and st.decided:
        say(f"write {TICKET}: request {st.id} {st.state} by {st.decided_by or '?'}: {st.reason or ''}")
    say(f"write {TICKET}: {describe(write)}")
    if write.allowed:
        # ... here the agent would post the comment ...
        return 0
    return 7 if write.needs_approval else 3


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RemitError as e:
        print(f"triage agent: {e}", file=sys.stderr)
        sys.exit(1)
