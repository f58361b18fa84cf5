"""SPIFFE Workload API interop client for crates/server/tests/workload_api.rs.

Drives Remit's Workload API (gRPC over the Unix socket in SPIFFE_ENDPOINT_SOCKET, e.g.
unix:///tmp/x/agent.sock) with the reference Python client (the `spiffe` package), does
mutual TLS with `spiffe-tls`, and checks the X.509-SVID on its own with `cryptography`:
    .venv/bin/python tests/spiffe/workload_client.py [--timeout S] SUBCOMMAND ...
Output: JSON objects, one a line, on stdout (logs on stderr). Exit codes: 0 success;
2 usage or configuration error (SPIFFE_ENDPOINT_SOCKET unset or not unix:, no socket file):
{"error": "CLIENT_ERROR", ...}; 3 the server answered with a gRPC status: {"error": "<code
name, e.g. PERMISSION_DENIED>", "detail": ...}, or ended a watched stream ("STREAM_ENDED");
4 anything else: the library rejected the answer ("CLIENT_ERROR", with "kind"), TLS failed
("TLS_ERROR"), or --timeout (default 30 s; every call has a deadline) passed ("TIMEOUT").
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import sys
import threading
import time

import grpc
import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID
from cryptography.x509.verification import PolicyBuilder, Store
from google.protobuf import json_format
from spiffe import JwtSvid, SpiffeId, WorkloadApiClient, X509Source
from spiffe._proto import workload_pb2 as pb, workload_pb2_grpc
from spiffe.errors import ArgumentError

EXIT_USAGE, EXIT_GRPC, EXIT_OTHER = 2, 3, 4
HEADER = (("workload.spiffe.io", "true"),)
DER = serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
UNARY = ("FetchJWTSVID", "ValidateJWTSVID")
_out_lock = threading.Lock()
_deadline = time.monotonic() + 30.0


class Failure(Exception):
    def __init__(self, name: str, detail: str, code: int = EXIT_OTHER) -> None:
        super().__init__(detail)
        self.name, self.detail, self.code = name, detail, code

def emit(obj: dict) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
        sys.stdout.flush()

def remaining() -> float:
    """Seconds left for a call: its deadline passes 1 s before the watchdog fires."""
    return max(0.1, _deadline - 1.0 - time.monotonic())

def classify(exc: BaseException) -> tuple[dict, int]:
    """Error line and exit code for an exception. py-spiffe wraps a gRPC error in its own
    (`raise FetchX509SvidError(...) from rpc_error`), so walk the cause chain; its stream
    callbacks only name the code ("gRPC error: StatusCode.PERMISSION_DENIED")."""
    if isinstance(exc, Failure):
        return {"error": exc.name, "detail": exc.detail}, exc.code
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, grpc.RpcError) and callable(getattr(e, "code", None)):
            details = e.details() if callable(getattr(e, "details", None)) else None
            return {"error": e.code().name, "detail": details or str(exc)}, EXIT_GRPC
        e = e.__cause__ or e.__context__
    m = re.search(r"StatusCode\.([A-Z_]+)", str(exc))
    if m:
        return {"error": m.group(1), "detail": str(exc)}, EXIT_GRPC
    if "stream ended unexpectedly" in str(exc):
        return {"error": "STREAM_ENDED", "detail": str(exc)}, EXIT_GRPC
    kind = type(exc).__name__
    detail = f"{kind}: {exc} {getattr(exc, 'context', '') or ''}".strip()
    code = EXIT_USAGE if isinstance(exc, ArgumentError) else EXIT_OTHER
    return {"error": "CLIENT_ERROR", "kind": kind, "detail": detail}, code

def socket_target() -> str:
    """gRPC target for SPIFFE_ENDPOINT_SOCKET (unix:///p or unix:/p); the file must exist."""
    value = os.environ.get("SPIFFE_ENDPOINT_SOCKET", "")
    if not value.startswith("unix:"):
        raise ArgumentError(f"SPIFFE_ENDPOINT_SOCKET must be unix:///path, got {value!r}")
    path = "/" + value[5:].lstrip("/")
    if not os.path.exists(path):
        raise ArgumentError(f'SPIFFE socket file "{path}" does not exist.')
    return "unix:" + path

def new_client() -> WorkloadApiClient:
    socket_target()  # the same checks, with a clear message when the variable is unset
    return WorkloadApiClient(default_timeout=remaining())

def raw_call(rpc: str, request, metadata=HEADER):
    """One call through the generated stub shipped in py-spiffe (no header interceptor);
    a stream's first message, whose status arrives with it."""
    stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(grpc.insecure_channel(socket_target()))
    call = getattr(stub, rpc)(request, metadata=metadata, timeout=remaining())
    if rpc in UNARY:
        return call
    try:
        return next(call)
    finally:
        call.cancel()

def normalize(value):
    """protobuf Struct numbers arrive as floats: integral ones back to int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    return [normalize(v) for v in value] if isinstance(value, list) else value

def raw_validate(token: str, audience: str) -> dict:
    """ValidateJWTSVID's response: py-spiffe's validate_jwt_svid discards it."""
    resp = raw_call("ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience=audience, svid=token))
    return {"spiffe_id": resp.spiffe_id,
            "claims": normalize(json_format.MessageToDict(resp.claims))}

def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether cert names issuer as its issuer and issuer's key (EC or RSA) verifies its
    signature."""
    return attempt(lambda: cert.verify_directly_issued_by(issuer)) == "ok"

def uri_sans(cert: x509.Certificate) -> list[str]:
    return [n.value for e in cert.extensions if e.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME
            for n in e.value if isinstance(n, x509.UniformResourceIdentifier)]

def attempt(fn) -> str:
    """"ok", or the error fn raised."""
    try:
        fn()
        return "ok"
    except Exception as err:
        return f"{type(err).__name__}: {err}"

def kids(bundle_set) -> dict:
    return {b.trust_domain.name: sorted(b.jwt_authorities) for b in bundle_set.bundles}

def describe_leaf(svid, authorities: list) -> dict:
    leaf = x509.load_der_x509_certificate(svid.leaf.public_bytes(DER))  # our own parse
    chain, key = svid.cert_chain, leaf.public_key()
    exts = {e.oid: e for e in leaf.extensions}
    bc, ku = exts.get(ExtensionOID.BASIC_CONSTRAINTS), exts.get(ExtensionOID.KEY_USAGE)
    eku = exts.get(ExtensionOID.EXTENDED_KEY_USAGE)
    sans = uri_sans(leaf)

    return {
        "spiffe_id": str(svid.spiffe_id), "uri_sans": sans, "uri_san_count": len(sans),
        "basic_constraints_ca": bool(bc and bc.value.ca),
        "basic_constraints_critical": bool(bc and bc.critical),
        "key_usage_critical": bool(ku and ku.critical),
        "digital_signature": bool(ku and ku.value.digital_signature),
        "key_cert_sign": bool(ku and ku.value.key_cert_sign),
        "crl_sign": bool(ku and ku.value.crl_sign),
        "eku": [oid.dotted_string for oid in eku.value] if eku else [],
        "not_before": int(leaf.not_valid_before_utc.timestamp()),
        "not_after": int(leaf.not_valid_after_utc.timestamp()),
        "serial": format(leaf.serial_number, "x"),
        "signature_algorithm_oid": leaf.signature_algorithm_oid.dotted_string,
        "signature_hash": getattr(leaf.signature_hash_algorithm, "name", None),
        "key_curve": key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else None,
        "chain_len": len(chain), "bundle_authority_count": len(authorities),
        "leaf_verifies_with_bundle": any(signed_by(leaf, a) for a in authorities),
        # every chain link issued by the next, the last by (or equal to) a bundle authority
        "chain_verifies_with_bundle": all(
            signed_by(chain[k], chain[k + 1]) for k in range(len(chain) - 1))
        and any(signed_by(chain[-1], a) or chain[-1] == a for a in authorities),
        # informational: cryptography's RFC 5280 (web-PKI-flavoured) client path validation
        "path_validation": attempt(lambda: PolicyBuilder().store(Store(authorities))
                                   .build_client_verifier().verify(leaf, chain[1:])),
        "private_key_matches":
            svid.private_key.public_key().public_bytes(DER, SPKI) == key.public_bytes(DER, SPKI),
    }

def cmd_fetch(args) -> None:
    aud, client = args.audience, new_client()
    ctx = client.fetch_x509_context()
    svid = ctx.default_svid
    bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    out = describe_leaf(svid, sorted(bundle.x509_authorities if bundle else [],
                                     key=lambda c: c.serial_number))
    jsvid = client.fetch_jwt_svid({aud})
    jbundles = client.fetch_jwt_bundles()
    jbundle = jbundles.get_bundle_for_trust_domain(jsvid.spiffe_id.trust_domain)
    validated = client.validate_jwt_svid(jsvid.token, aud)
    out.update(
        x509_svid_count=len(ctx.x509_svids),
        x509_bundle_trust_domains=sorted(b.trust_domain.name for b in ctx.x509_bundle_set.bundles),
        x509_bundles_rpc_trust_domains=sorted(
            b.trust_domain.name for b in client.fetch_x509_bundles().bundles),
        jwt_spiffe_id=str(jsvid.spiffe_id), jwt_token=jsvid.token,
        jwt_header=pyjwt.get_unverified_header(jsvid.token),
        jwt_bundle_trust_domains=sorted(b.trust_domain.name for b in jbundles.bundles),
        jwt_bundle_kids=kids(jbundles), validated_spiffe_id=str(validated.spiffe_id),
        # local signature check of the JWT-SVID against the fetched JWT bundle
        jwt_local_verify=attempt(lambda: JwtSvid.parse_and_validate(jsvid.token, jbundle, {aud})))
    v = raw_validate(jsvid.token, aud)
    # What py-spiffe hides: the validation response, the map keys as sent, the hints.
    x = raw_call("FetchX509SVID", pb.X509SVIDRequest())
    js = raw_call("FetchJWTSVID", pb.JWTSVIDRequest(audience=[aud]))
    out.update(
        jwt_claims=v["claims"], validate_response_spiffe_id=v["spiffe_id"],
        raw_x509_svid_ids=[s.spiffe_id for s in x.svids],
        raw_x509_svid_hints=[s.hint for s in x.svids],
        raw_federated_bundle_keys=sorted(x.federated_bundles),
        raw_x509_bundles_keys=sorted(
            raw_call("FetchX509Bundles", pb.X509BundlesRequest()).bundles),
        raw_jwt_bundle_keys=sorted(
            raw_call("FetchJWTBundles", pb.JWTBundlesRequest()).bundles),
        raw_jwt_svid_ids=[s.spiffe_id for s in js.svids],
        raw_jwt_svid_hints=[s.hint for s in js.svids])
    out["jwt_verifies_with_bundle"] = out["jwt_local_verify"] == "ok"
    emit(out)

def cmd_jwt(args) -> None:
    jsvid = new_client().fetch_jwt_svid({args.audience})
    emit({"spiffe_id": str(jsvid.spiffe_id), "token": jsvid.token})

def cmd_write_svid(args) -> None:
    """Writes this process's X.509-SVID (chain PEM), its key (PKCS#8 PEM) and the bundle to
    --dir, as spiffe-helper does, prints them, then keeps running (the identity lives as long
    as this process) until stdin closes or the deadline passes."""
    from cryptography.hazmat.primitives import serialization
    ctx = new_client().fetch_x509_context()
    svid = ctx.default_svid
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
    paths = {n: os.path.join(args.dir, n) for n in ("svid.pem", "key.pem", "bundle.pem")}
    bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    with open(paths["svid.pem"], "wb") as f:
        f.write(b"".join(pem(c) for c in svid.cert_chain))
    with open(paths["key.pem"], "wb") as f:
        f.write(svid.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    with open(paths["bundle.pem"], "wb") as f:
        f.write(b"".join(pem(c) for c in bundle.x509_authorities))
    emit({"spiffe_id": str(svid.spiffe_id), **paths})
    sys.stdin.read()

def cmd_start_task(args) -> None:
    """Uses a JWT-SVID for Remit's audience on Remit's API while this process (the attested
    one) still runs: starts a task, prints the status and the answer."""
    import urllib.error, urllib.request
    token = new_client().fetch_jwt_svid({"remit"}).token
    body = json.dumps({"workflow": args.workflow, "intent": "from the Workload API",
                       "audience": ["https://api.example"]}).encode()
    req = urllib.request.Request(args.url + "/v1/tasks", data=body, method="POST", headers={
        "authorization": f"Bearer {token}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            emit({"status": r.status, "body": json.loads(r.read())})
    except urllib.error.HTTPError as e:
        emit({"status": e.code, "body": json.loads(e.read() or b"null")})

def cmd_validate(args) -> None:
    validated = new_client().validate_jwt_svid(args.token, args.audience)
    v = raw_validate(args.token, args.audience)
    emit({**v, "token_spiffe_id": str(validated.spiffe_id)})

def watch(args, start, describe) -> None:
    """Streams with py-spiffe (no reconnect, so an error ends it) until --count updates."""
    updates: queue.Queue = queue.Queue()
    handle = start(lambda item: updates.put((True, item)),
                   lambda err: updates.put((False, err)), retry_connect=False)
    try:
        for i in range(1, args.count + 1):
            try:
                ok, item = updates.get(timeout=remaining())
            except queue.Empty:
                raise Failure("TIMEOUT", f"received {i - 1} of {args.count} updates")
            if not ok:
                raise item
            emit({"update": i, **describe(item)})
    finally:
        handle.cancel()

def cmd_watch(args) -> None:
    def describe(ctx):
        svid = ctx.default_svid
        bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        return {"spiffe_id": str(svid.spiffe_id), "serial": format(svid.leaf.serial_number, "x"),
                "not_after": int(svid.leaf.not_valid_after_utc.timestamp()),
                "bundle_serials": sorted(format(c.serial_number, "x")
                                         for c in (bundle.x509_authorities if bundle else []))}
    return watch(args, new_client().stream_x509_contexts, describe)

def cmd_watch_jwt_bundles(args) -> None:
    return watch(args, new_client().stream_jwt_bundles, lambda s: {"kids": kids(s)})

NO_HEADER_REQUESTS = {
    "FetchJWTSVID": pb.JWTSVIDRequest(audience=["remit-no-header"]),
    "ValidateJWTSVID": pb.ValidateJWTSVIDRequest(audience="a", svid="x.y.z"),
    "FetchX509SVID": pb.X509SVIDRequest(),
    "FetchX509Bundles": pb.X509BundlesRequest(),
    "FetchJWTBundles": pb.JWTBundlesRequest(),
}

def cmd_no_header(args) -> None:
    metadata = () if args.header_value is None else (("workload.spiffe.io", args.header_value),)
    raw_call(args.rpc, NO_HEADER_REQUESTS[args.rpc], metadata)
    emit({"ok": True, "rpc": args.rpc})

def tls_setup(make):
    """An X509Source (after a plain fetch, which surfaces a gRPC status: the source would
    retry until its timeout), the socket make(source) builds and our own SPIFFE ID. The
    source closes at once: spiffe-tls 0.4.0 cannot reload a context already in use, so a
    rotation would only log tracebacks."""
    client = new_client()
    own = str(client.fetch_x509_context().default_svid.spiffe_id)
    source = X509Source(workload_api_client=client, timeout_in_seconds=remaining())
    try:
        return tls(lambda: make(source)), own
    finally:
        source.close()

def tls(fn):
    from OpenSSL import SSL
    from spiffetls.errors import TLSConnectionError
    try:
        return fn()
    except (SSL.Error, TLSConnectionError) as err:
        reason = getattr(err, "context", {}).get("reason", "")
        raise Failure("TLS_ERROR", f"{type(err).__name__}: {err} {reason}".strip()) from err

def peer_id(conn) -> str:
    cert = conn.get_peer_certificate(as_cryptography=True)
    sans = uri_sans(cert) if cert is not None else []
    if len(sans) != 1:
        raise Failure("TLS_ERROR", f"peer certificate has URI SANs {sans}, want exactly one")
    return sans[0]

def read_line(conn) -> str:
    data = b""
    while not data.endswith(b"\n") and len(data) < 65536:
        chunk = tls(lambda: conn.recv(4096))
        if not chunk:
            break
        data += chunk
    return data.decode().strip()

def cmd_mtls_server(args) -> None:
    from spiffetls import ListenOptions, ServerTlsMode, listen
    from spiffetls.tlsconfig.authorize import authorize_any, authorize_id
    authorize = authorize_id(SpiffeId(args.expect_id)) if args.expect_id else authorize_any()
    listener, own = tls_setup(lambda source: listen(
        "127.0.0.1:0", source, ListenOptions(tls_mode=ServerTlsMode.MTLS, authorize_fn=authorize)))
    with open(args.port_file + ".tmp", "w") as f:
        f.write(f"{listener.getsockname()[1]} {own}")
    os.replace(args.port_file + ".tmp", args.port_file)
    conn, _ = listener.accept()
    tls(conn.do_handshake)
    peer, line = peer_id(conn), read_line(conn)
    tls(lambda: conn.sendall((json.dumps({"peer": peer, "server": own}) + "\n").encode()))
    with contextlib.suppress(Exception):
        conn.shutdown()
    conn.close()
    listener.close()
    emit({"peer": peer, "received": line})

def cmd_mtls_client(args) -> None:
    from spiffetls import ClientTlsMode, dial
    from spiffetls.tlsconfig.authorize import authorize_id
    authorize = authorize_id(SpiffeId(args.expect_id))
    conn, own = tls_setup(lambda source: dial(
        f"127.0.0.1:{args.port}", source, ClientTlsMode.TLS, authorize))
    peer = peer_id(conn)
    tls(lambda: conn.sendall(f"hello from {own}\n".encode()))
    reply = read_line(conn)
    conn.close()
    emit({"peer": peer, "reply": json.loads(reply) if reply.startswith("{") else reply})

REQUIRED = {"required": True}
COMMANDS = {  # name: (function, help, [(flag, argparse options)])
    "fetch": (cmd_fetch, "X.509 context, JWT-SVID, bundles, validation, leaf analysis",
              [("--audience", REQUIRED)]),
    "jwt": (cmd_jwt, "fetch a JWT-SVID", [("--audience", REQUIRED)]),
    "write-svid": (cmd_write_svid, "write the X.509-SVID, key and bundle as PEM, then hold",
                   [("--dir", REQUIRED)]),
    "start-task": (cmd_start_task, "start a task on Remit's API with a JWT-SVID",
                   [("--url", REQUIRED), ("--workflow", REQUIRED)]),
    "validate": (cmd_validate, "validate a JWT-SVID via the Workload API",
                 [("--audience", REQUIRED), ("--token", REQUIRED)]),
    "watch": (cmd_watch, "stream X.509 contexts", [("--count", {**REQUIRED, "type": int})]),
    "watch-jwt-bundles": (cmd_watch_jwt_bundles, "stream JWT bundles",
                          [("--count", {**REQUIRED, "type": int})]),
    "no-header": (cmd_no_header, "call an RPC without the workload.spiffe.io header", [
        ("--rpc", {"default": "FetchJWTSVID", "choices": list(NO_HEADER_REQUESTS)}),
        ("--header-value", {"help": "send the header with this (wrong) value instead"})]),
    "mtls-server": (cmd_mtls_server, "accept one mTLS connection (spiffe-tls)", [
        ("--port-file", REQUIRED),
        ("--expect-id", {"help": "authorize only this client SPIFFE ID (default: any)"})]),
    "mtls-client": (cmd_mtls_client, "connect to mtls-server (spiffe-tls)", [
        ("--port", {**REQUIRED, "type": int}),
        ("--expect-id", {**REQUIRED, "help": "the server SPIFFE ID to authorize"})]),
}

def main(argv=None) -> None:
    global _deadline
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="overall deadline in seconds (default 30)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (func, help_text, options) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        for flag, kwargs in options:
            p.add_argument(flag, **kwargs)
    args = parser.parse_args(argv)
    _deadline = time.monotonic() + args.timeout

    def watchdog():
        try:
            emit({"error": "TIMEOUT", "detail": f"no result within {args.timeout} s"})
        except OSError:
            pass  # nobody reads our output any more (a holder's parent went away): exit anyway
        os._exit(EXIT_OTHER)

    timer = threading.Timer(args.timeout, watchdog)
    timer.daemon = True
    timer.start()
    try:
        args.func(args)
        code = 0
    except Exception as exc:
        line, code = classify(exc)
        emit(line)
    sys.stderr.flush()
    os._exit(code)  # skip interpreter shutdown: gRPC's daemon threads can delay it


if __name__ == "__main__":
    main()
