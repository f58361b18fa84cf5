"""Runs scim2-tester (pinned in tests/python/requirements.in) against a running Remit's SCIM
service provider and prints one JSON object: every check's status, title and reason, and the
counts per status. Used by crates/server/tests/scim.rs; by hand:

    .venv/bin/python tests/scim/check.py http://127.0.0.1:7878/scim/v2 "$(cat remit-data/scim-token)"
"""

import json
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server


def main() -> int:
    url, token = sys.argv[1], sys.argv[2]
    http = Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    client = SyncSCIMClient(http)
    results = check_server(client, raise_exceptions=False)
    checks = [
        {"status": r.status.name, "title": r.title, "reason": r.reason or "", "tags": sorted(r.tags or [])}
        for r in results
    ]
    counts: dict[str, int] = {}
    for c in checks:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    print(json.dumps({"counts": counts, "checks": checks}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
