"""An independent Shared Signals receiver, as a tool server or gateway would run one.

It verifies every Security Event Token with PyJWT against the transmitter's JWKS: ES256,
header `typ` `secevent+jwt`, `iss`, `aud`, `iat` and `jti` present, exactly one event, a
top-level `sub_id`, and no `sub` or `exp` (SSF 1.0 §4, RFC 8417).

usage:
  receiver.py push OUT CONFIG_FILE ISSUER AUTHORIZATION
      An RFC 8935 push endpoint on 127.0.0.1 (its port printed on the first line of stdout).
      Each verified SET becomes a JSON line in OUT ({received, jti, event, sub_id, payload,
      txn}); a refused one a line {"error": …} and a 400 with an RFC 8935 error. While the file
      OUT.down exists it answers 503 (the receiver is down). CONFIG_FILE is JSON {"jwks": URL,
      "aud": the stream's audience}, read on every SET (a restarted transmitter can move); while
      it is missing or the JWKS cannot be fetched, it answers 503 (try again later).
  receiver.py poll POLL_URL TOKEN JWKS_URL ISSUER AUDIENCE
      One RFC 8936 poll (returnImmediately), every SET verified, then acknowledged in a second
      poll; prints the verified SETs as a JSON array.
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import requests


def verify(token, jwks_url, issuer, audience):
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "secevent+jwt":
        raise ValueError(f"typ is {header.get('typ')!r}")
    key = jwt.PyJWKClient(jwks_url, cache_keys=False).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["iat", "jti"]},
    )
    for forbidden in ("sub", "exp"):
        if forbidden in claims:
            raise ValueError(f"a SET carries `{forbidden}`")
    events = claims.get("events")
    if not isinstance(events, dict) or len(events) != 1:
        raise ValueError("a SET carries exactly one event")
    if not isinstance(claims.get("sub_id"), dict) or "format" not in claims["sub_id"]:
        raise ValueError("no sub_id")
    (event, payload), = events.items()
    return {
        "jti": claims["jti"],
        "event": event,
        "sub_id": claims["sub_id"],
        "payload": payload,
        "txn": claims.get("txn"),
        "iat": claims["iat"],
    }


def push(out, config_file, issuer, authorization):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body=None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Language", "en")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            if os.path.exists(out + ".down"):
                return self.answer(503)
            if self.headers.get("Authorization") != authorization:
                return self.answer(401)
            if self.headers.get("Content-Type") != "application/secevent+jwt":
                return self.answer(400, {"err": "invalid_request", "description": "content type"})
            try:
                with open(config_file) as f:
                    config = json.load(f)
                jwt.PyJWKClient(config["jwks"], cache_keys=False).get_jwk_set()
            except Exception:  # not ready, or the transmitter moved: not the SET's fault
                return self.answer(503)
            try:
                got = verify(body, config["jwks"], issuer, config["aud"])
            except Exception as err:  # the refusal is the record
                with open(out, "a") as f:
                    f.write(json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n")
                return self.answer(400, {"err": "invalid_request", "description": str(err)})
            got["received"] = time.time()
            with open(out, "a") as f:
                f.write(json.dumps(got) + "\n")
            self.answer(202)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def poll(url, token, jwks_url, issuer, audience):
    auth = {"Authorization": f"Bearer {token}"}
    r = requests.post(url, json={"returnImmediately": True, "maxEvents": 100}, headers=auth, timeout=30)
    r.raise_for_status()
    sets = r.json()["sets"]
    got = []
    for jti, token_ in sets.items():
        v = verify(token_, jwks_url, issuer, audience)
        assert v["jti"] == jti, "a poll answer is keyed by the SET's jti"
        got.append(v)
    r = requests.post(url, json={"ack": list(sets), "returnImmediately": True, "maxEvents": 0}, headers=auth, timeout=30)
    r.raise_for_status()
    print(json.dumps(got))


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"push": push, "poll": poll}[mode](*args)
