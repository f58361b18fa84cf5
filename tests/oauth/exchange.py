"""RFC 8693 token exchange against a real Remit server, by standard client libraries.

authlib's OAuth2Session performs the exchange (the token endpoint found through RFC 8414
discovery); PyJWT verifies the result by the server's JWKS with `aud` = the tool, as a tool
would. Prints one JSON report on stdout.

usage: exchange.py BASE_URL TASK_TOKEN TOOL_AUDIENCE SCOPE
"""

import json
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session

base, task_token, audience, scope = sys.argv[1:5]

meta = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
assert meta["issuer"] == base, meta
assert "urn:ietf:params:oauth:grant-type:token-exchange" in meta["grant_types_supported"], meta

client = OAuth2Session(token_endpoint_auth_method="none")
token = client.fetch_token(
    meta["token_endpoint"],
    grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
    subject_token=task_token,
    subject_token_type="urn:ietf:params:oauth:token-type:jwt",
    audience=audience,
    scope=scope,
)

jwks = jwt.PyJWKClient(meta["jwks_uri"])
key = jwks.get_signing_key_from_jwt(token["access_token"])
claims = jwt.decode(
    token["access_token"],
    key.key,
    algorithms=["ES256"],
    audience=audience,
    issuer=meta["issuer"],
    options={"require": ["exp", "iat", "jti", "sub", "aud", "iss"]},
)

# The same token checked against another audience must fail.
try:
    jwt.decode(token["access_token"], key.key, algorithms=["ES256"], audience="remit", issuer=meta["issuer"])
    wrong_audience_refused = False
except jwt.InvalidAudienceError:
    wrong_audience_refused = True

print(json.dumps({"token": dict(token), "claims": claims, "wrong_audience_refused": wrong_audience_refused}))
