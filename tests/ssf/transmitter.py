"""An independent Shared Signals transmitter (an identity provider's), signing SETs with PyJWT.

usage:
  transmitter.py serve KEYDIR [PORT]
      Makes an RSA key in KEYDIR (once) and serves its JWK Set at http://127.0.0.1:PORT/jwks
      (PORT chosen by the system when not given; printed on the first line of stdout).
  transmitter.py send KEYDIR URL ISSUER AUDIENCE EVENT SUBJECT [PAYLOAD] [JTI]
      Signs one SET (RS256, typ secevent+jwt, kid of the key) and pushes it to URL as RFC 8935
      asks; prints {"status": …, "body": …}. SUBJECT and PAYLOAD are JSON.
"""

import json
import os
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def key(keydir):
    path = os.path.join(keydir, "key.pem")
    if not os.path.exists(path):
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with open(path, "wb") as f:
            f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def jwk(k):
    j = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key()))
    j.update({"kid": "idp-key-1", "use": "sig", "alg": "RS256"})
    return j


def serve(keydir, port="0"):
    body = json.dumps({"keys": [jwk(key(keydir))]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def send(keydir, url, issuer, audience, event, subject, payload="{}", jti=None):
    claims = {
        "iss": issuer,
        "aud": audience,
        "iat": int(time.time()),
        "jti": jti or uuid.uuid4().hex,
        "sub_id": json.loads(subject),
        "events": {event: json.loads(payload)},
    }
    token = jwt.encode(claims, key(keydir), algorithm="RS256",
                       headers={"typ": "secevent+jwt", "kid": "idp-key-1"})
    r = requests.post(url, data=token, timeout=30,
                      headers={"Content-Type": "application/secevent+jwt", "Accept": "application/json"})
    print(json.dumps({"status": r.status_code, "body": r.json() if r.content else None}))


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"serve": serve, "send": send}[mode](*args)
