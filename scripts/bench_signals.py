"""Kill → Shared Signals SET latency against a running Remit (REMIT_URL, REMIT_ADMIN_TOKEN).

An administrator's push stream to tests/ssf/receiver.py (PyJWT verifies every SET). Then:
1. KILLS tasks killed one at a time: latency from sending the kill to the receiver having
   verified its session-revoked SET (p50, p99, max);
2. one workflow with BATCH live tasks suspended: the kill's answer time and the time until every
   one of the BATCH SETs was received.
usage: bench_signals.py KILLS BATCH
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import requests

url = os.environ["REMIT_URL"]
admin = {"Authorization": f"Bearer {os.environ['REMIT_ADMIN_TOKEN']}"}
kills, batch = int(sys.argv[1]), int(sys.argv[2])
http = requests.Session()


def call(method, path, body=None, headers=admin, ok=(200, 201, 202, 204)):
    r = http.request(method, url + path, json=body, headers=headers, timeout=60)
    assert r.status_code in ok, (method, path, r.status_code, r.text)
    return r.json() if r.content else None


td = call("GET", "/v1/status")["trust_domain"]
issuer = call("GET", "/.well-known/ssf-configuration", headers={})["issuer"]
for w in ("one", "many"):
    call("POST", "/v1/workflows", {"name": w, "purpose": "bench", "owner": "ops@example.com", "max_task_ttl_seconds": 3600})
call("POST", "/v1/agents", {"name": "bot", "owner": "ops@example.com", "workflows": ["one", "many"]})
jt = call("POST", "/v1/agents/bot/join-tokens", {})
inst = call("POST", "/v1/join", {"join_token": jt["token"]}, headers={})["token"]
ih = {"Authorization": f"Bearer {inst}"}

work = tempfile.mkdtemp()
out, conf = os.path.join(work, "received.jsonl"), os.path.join(work, "receiver.json")
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rcv = subprocess.Popen([sys.executable, os.path.join(repo, "tests/ssf/receiver.py"), "push", out, conf, issuer,
                        "Bearer bench"], stdout=subprocess.PIPE, text=True)
port = int(rcv.stdout.readline())
stream = call("POST", "/ssf/streams", {
    "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": f"http://127.0.0.1:{port}/events",
                 "authorization_header": "Bearer bench"},
    "events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]})
with open(conf, "w") as f:
    json.dump({"jwks": url + "/.well-known/jwks.json", "aud": stream["aud"]}, f)

seen = {}
offset = 0


def drain():
    global offset
    if not os.path.exists(out):
        return
    with open(out) as f:
        f.seek(offset)
        for line in f:
            if not line.endswith("\n"):
                break
            offset += len(line)
            v = json.loads(line)
            assert "error" not in v, v
            uri = v.get("sub_id", {}).get("uri")
            if uri:
                seen[uri] = v["received"]


def start(w):
    t = call("POST", "/v1/tasks", {"workflow": w, "intent": "bench", "audience": ["remit"], "ttl_seconds": 3600}, headers=ih)
    return t["task"]["id"]


lat = []
for _ in range(kills):
    tid = start("one")
    uri = f"spiffe://{td}/workflow/one/task/{tid}"
    t0 = time.time()
    call("POST", f"/v1/tasks/{tid}/revoke", {"reason": "bench"})
    while uri not in seen:
        drain()
        if time.time() - t0 > 30:
            raise SystemExit(f"no SET for {tid} in 30 s")
        time.sleep(0.001)
    lat.append((seen[uri] - t0) * 1000)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))]
print(f"one kill at a time: {kills} kills, kill→SET verified at the receiver "
      f"p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {lat[-1]:.1f} ms")

ids = [start("many") for _ in range(batch)]
uris = {f"spiffe://{td}/workflow/many/task/{t}" for t in ids}
t0 = time.time()
call("POST", "/v1/workflows/many/suspend", {"reason": "bench"})
answered = time.time() - t0
while not uris <= seen.keys():
    drain()
    if time.time() - t0 > 600:
        raise SystemExit(f"{len(uris - seen.keys())} SETs missing after 600 s")
    time.sleep(0.01)
last = max(seen[u] for u in uris) - t0
print(f"workflow of {batch} tasks suspended: kill answered in {answered * 1000:.0f} ms; all {batch} SETs "
      f"received after {last * 1000:.0f} ms ({batch / last:.0f} SETs/s)")
rcv.kill()
