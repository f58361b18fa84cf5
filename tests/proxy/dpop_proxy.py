"""RFC 9449 DPoP at Remit's tool proxy, with proofs made by a standard JWT library (PyJWT).

Starts a task whose token is bound to a fresh P-256 key (the proof to Remit's API), then calls
the proxy with it in every way, right and wrong; prints one JSON report of the status codes (the
Rust test asserts on them).

usage: dpop_proxy.py BASE_URL PROXY_URL INSTANCE_TOKEN
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

base, proxy, instance = sys.argv[1:4]


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Key:
    def __init__(self):
        self.private = ec.generate_private_key(ec.SECP256R1())
        n = self.private.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}

    def proof(self, method, url, token):
        claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": url, "iat": int(time.time()),
                  "ath": b64(hashlib.sha256(token.encode()).digest())}
        return jwt.encode(claims, self.private, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": self.jwk})


key, other = Key(), Key()
r = requests.post(f"{base}/v1/tasks", headers={"Authorization": f"Bearer {instance}",
                  "DPoP": key.proof("POST", f"{base}/v1/tasks", instance)},
                  json={"workflow": "w", "intent": "bound work", "audience": ["remit"], "ttl_seconds": 300})
out = {"start": r.status_code}
tok = r.json()["token"]
out["bound"] = "cnf" in jwt.decode(tok, options={"verify_signature": False})
url = f"{proxy}/tools/tickets/issues/7"


def call(auth, proof=None):
    h = {"Authorization": auth}
    if proof is not None:
        h["DPoP"] = proof
    return requests.get(url, headers=h).status_code


out["with_proof"] = call(f"DPoP {tok}", key.proof("GET", url, tok))
out["bearer_scheme"] = call(f"Bearer {tok}")
r = requests.get(url, headers={"Authorization": f"DPoP {tok}"})
out["challenge"] = r.headers.get("WWW-Authenticate", "")
out["no_proof"] = call(f"DPoP {tok}")
p = key.proof("GET", url, tok)
out["first"] = call(f"DPoP {tok}", p)
out["replay"] = call(f"DPoP {tok}", p)
out["other_key"] = call(f"DPoP {tok}", other.proof("GET", url, tok))
out["wrong_htu"] = call(f"DPoP {tok}", key.proof("GET", f"{proxy}/tools/tickets/issues/8", tok))
out["wrong_method"] = call(f"DPoP {tok}", key.proof("POST", url, tok))
print(json.dumps(out))
