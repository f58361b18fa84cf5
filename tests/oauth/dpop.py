"""RFC 9449 DPoP against a real Remit server, with proofs made by a standard JWT library.

PyJWT (on `cryptography`) signs every proof with a fresh P-256 key; requests sends them. The
script binds a task token and an exchanged credential to its key and tries every way to use
them wrongly; it prints one JSON report of the answers (the Rust test asserts on them).

usage: dpop.py BASE_URL INSTANCE_TOKEN TOOL_SECRET
"""

import base64
import hashlib
import json
import sys
import time
import uuid

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec

base, instance, tool_secret = sys.argv[1:4]


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Key:
    def __init__(self):
        self.private = ec.generate_private_key(ec.SECP256R1())
        n = self.private.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}
        canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": self.jwk["x"], "y": self.jwk["y"]},
                               separators=(",", ":"), sort_keys=True)
        self.jkt = b64(hashlib.sha256(canonical.encode()).digest())

    def proof(self, method, path, token=None, iat=None):
        claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": base + path, "iat": int(iat or time.time())}
        if token is not None:
            claims["ath"] = b64(hashlib.sha256(token.encode()).digest())
        return jwt.encode(claims, self.private, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": self.jwk})


key, other = Key(), Key()
out = {"jkt": key.jkt}

# A task whose token is bound to `key` (the proof carries `ath` of the instance token).
r = requests.post(f"{base}/v1/tasks", headers={"Authorization": f"Bearer {instance}",
                  "DPoP": key.proof("POST", "/v1/tasks", instance)},
                  json={"workflow": "deploy", "intent": "bound work", "audience": ["remit"], "ttl_seconds": 300})
out["start"] = r.status_code
task = r.json()
tok, tid = task["token"], task["task"]["id"]
out["task_cnf"] = jwt.decode(tok, options={"verify_signature": False}).get("cnf")
path = f"/v1/tasks/{tid}"


def get(auth, proof=None):
    h = {"Authorization": auth}
    if proof is not None:
        h["DPoP"] = proof
    r = requests.get(base + path, headers=h)
    return r.status_code, r.headers.get("WWW-Authenticate", "")


out["with_proof"] = get(f"DPoP {tok}", key.proof("GET", path, tok))[0]
out["no_proof"] = get(f"DPoP {tok}")
out["bearer_scheme"] = get(f"Bearer {tok}", key.proof("GET", path, tok))[0]
replayed = key.proof("GET", path, tok)
out["first_use"] = get(f"DPoP {tok}", replayed)[0]
out["replayed"] = get(f"DPoP {tok}", replayed)[0]
out["other_key"] = get(f"DPoP {tok}", other.proof("GET", path, tok))[0]
out["wrong_ath"] = get(f"DPoP {tok}", key.proof("GET", path, "another token"))[0]
out["wrong_url"] = get(f"DPoP {tok}", key.proof("GET", "/v1/tasks", tok))[0]
out["stale"] = get(f"DPoP {tok}", key.proof("GET", path, tok, iat=time.time() - 600))[0]

# A copy of the bound token in a body (a gateway asking on its behalf) is not enough, and
# an instance cannot start an unbound child of the bound task.
r = requests.post(f"{base}/v1/decisions", headers={"Authorization": f"Bearer {instance}"},
                  json={"token": tok, "action": {"name": "read"}, "resource": {"type": "Tool", "id": "tickets"}})
out["body_token"] = r.status_code
r = requests.post(f"{base}/v1/tasks", headers={"Authorization": f"Bearer {instance}"},
                  json={"parent": tid, "agent": "deploy-bot", "intent": "x", "audience": ["remit"]})
out["unbound_child"] = [r.status_code, "DPoP" in r.json().get("message", "")]

# The token endpoint: a bound subject token needs a proof from its key; the credential is
# bound to it too.
form = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": tok,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "audience": "tickets", "scope": "read"}
r = requests.post(f"{base}/oauth2/token", data=form)
out["exchange_no_proof"] = [r.status_code, r.json().get("error")]
r = requests.post(f"{base}/oauth2/token", data=form, headers={"DPoP": other.proof("POST", "/oauth2/token")})
out["exchange_other_key"] = [r.status_code, r.json().get("error")]
r = requests.post(f"{base}/oauth2/token", data=form, headers={"DPoP": key.proof("POST", "/oauth2/token")})
out["exchange"] = [r.status_code, r.json().get("token_type")]
cred = r.json()["access_token"]
out["cred_cnf"] = jwt.decode(cred, options={"verify_signature": False}).get("cnf")
r = requests.post(f"{base}/oauth2/introspect", headers={"Authorization": f"Bearer {tool_secret}"}, data={"token": cred})
out["introspection"] = r.json()
print(json.dumps(out))
