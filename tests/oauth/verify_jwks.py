"""Which JWK Sets verify a token, as a relying party (a tool server) would check it with PyJWT.

For each JWKS URL: fetch it with PyJWKClient, find the token's `kid`, verify the signature,
`iss` and `aud`. Prints one JSON object: {url: "ok" | "<error class>: <message>"}.

usage: verify_jwks.py TOKEN ISSUER AUDIENCE JWKS_URL...
"""

import json
import sys

import jwt

token, issuer, audience, *urls = sys.argv[1:]
report = {}
for url in urls:
    try:
        key = jwt.PyJWKClient(url, cache_keys=False).get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=["ES256"], audience=audience, issuer=issuer)
        report[url] = "ok"
    except Exception as err:  # the kind of refusal is the report
        report[url] = f"{type(err).__name__}: {err}"
print(json.dumps(report))
