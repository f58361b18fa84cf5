"""Time from a revocation to the Workload API stream's update, measured from outside.

Each round starts a py-spiffe client streaming X.509 contexts (tests/spiffe/workload_client.py
watch), waits for its first SVID, disables the agent through Remit's HTTP API, and records
when the stream's PermissionDenied arrives: after the API acknowledged the disable (the
figure), and after the request was sent. The agent is enabled again for the next round.
Used by scripts/bench-workload.sh; needs REMIT_URL and REMIT_ADMIN_TOKEN.
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def api(method, path, body=None):
    req = urllib.request.Request(os.environ["REMIT_URL"] + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"authorization": "Bearer " + os.environ["REMIT_ADMIN_TOKEN"],
                                          "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--socket", required=True)
    a = p.parse_args()
    exe = os.path.realpath(sys.executable)
    digest = hashlib.sha256(open(exe, "rb").read()).hexdigest()
    api("POST", "/v1/workflows", {"name": "bench", "purpose": "bench", "owner": "ops@example.com"})
    api("POST", "/v1/agents", {"name": "bench-bot", "owner": "ops@example.com", "workflows": ["bench"]})
    api("POST", "/v1/entries", {"agent": "bench-bot",
                                "selectors": [f"unix:uid:{os.getuid()}", f"unix:sha256:{digest}"]})
    env = dict(os.environ, SPIFFE_ENDPOINT_SOCKET=a.socket)
    after_ack, after_send = [], []
    for _ in range(a.rounds):
        w = subprocess.Popen([sys.executable, os.path.join(HERE, "workload_client.py"), "--timeout", "60",
                              "watch", "--count", "1000"], stdout=subprocess.PIPE, text=True, env=env)
        first = json.loads(w.stdout.readline())
        assert first.get("update") == 1, first
        sent = time.monotonic()
        api("POST", "/v1/agents/bench-bot/disable", {"reason": "bench"})
        acked = time.monotonic()
        end = json.loads(w.stdout.readline())
        got = time.monotonic()
        assert end.get("error") == "PERMISSION_DENIED", end
        w.wait(timeout=30)
        after_ack.append((got - acked) * 1000)
        after_send.append((got - sent) * 1000)
        api("POST", "/v1/agents/bench-bot/enable", {"reason": "bench"})

    def summary(xs):
        xs = sorted(xs)
        return (f"p50 {statistics.median(xs):.1f} ms, p95 {xs[int(len(xs) * 0.95) - 1]:.1f} ms, "
                f"max {xs[-1]:.1f} ms")
    print(f"revocation → stream PermissionDenied over {a.rounds} rounds:")
    print(f"  after the disable was acknowledged: {summary(after_ack)}")
    print(f"  after the disable was sent:         {summary(after_send)}")


if __name__ == "__main__":
    main()
