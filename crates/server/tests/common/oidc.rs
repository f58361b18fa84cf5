//! The ONE test OpenID provider (tests/oidc: panva's certified `oidc-provider` under Node.js)
//! for every test that needs a real OP: each [`OidcProvider`] is its own node process on its
//! own loopback port, with its own config, stopped (and never leaked) when dropped.
//!
//! - [`OidcProvider::start`] / [`OidcProvider::start_with`]: start it with the default config
//!   (tests/oidc/config.json) or with a config the test builds ([`default_config`] is a
//!   good base); see tests/oidc/README.md for the format.
//! - [`Browser`]: a cookie-keeping, non-redirect-following HTTP client that plays the End-User:
//!   [`Browser::authorize`] follows an authorization request through the OP's headless login
//!   (as the account you name) until the OP redirects back to the client, and returns that URL.
//! - [`AuthRequest`]: builds an authorization code request with PKCE (S256), state and nonce.
//!
//! Node comes from `NODE` (default `node` on PATH); the provider script from
//! `REMIT_TEST_OIDC_PROVIDER` (`scripts/test.sh` sets it), else from `scripts/oidc-env.sh`,
//! which installs the lockfile's packages first. No node is a test failure, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::Url;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// How long a provider may take to print its ready line (it normally takes well under 1 s).
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The node binary: `NODE`, else `node` on PATH.
pub fn node() -> String {
    std::env::var("NODE").ok().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "node".to_owned())
}

/// The provider script (tests/oidc/provider.mjs), its packages installed: from
/// `REMIT_TEST_OIDC_PROVIDER`, else from running `scripts/oidc-env.sh` (once per test binary).
pub fn provider_script() -> PathBuf {
    static SCRIPT: OnceLock<PathBuf> = OnceLock::new();
    SCRIPT
        .get_or_init(|| {
            if let Ok(p) = std::env::var("REMIT_TEST_OIDC_PROVIDER")
                && !p.trim().is_empty()
            {
                return PathBuf::from(p.trim());
            }
            let script = repo().join("scripts/oidc-env.sh");
            let out = std::process::Command::new(&script).stderr(Stdio::inherit()).output().unwrap_or_else(|e| {
                panic!("cannot run {}: {e}; the OIDC tests need Node.js >= 20.19 and npm", script.display())
            });
            assert!(
                out.status.success(),
                "{} failed ({}): the OIDC tests need Node.js >= 20.19 and npm (see its messages above)",
                script.display(),
                out.status
            );
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
        .clone()
}

/// tests/oidc/config.json, the default config: clients `remit-rs256` and `remit-es256`
/// (confidential, native, redirect `http://127.0.0.1/callback` on any port) and `remit-cli`
/// (public), accounts `alice`, `bob` and `mallory` (email not verified).
pub fn default_config() -> Value {
    let path = repo().join("tests/oidc/config.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// One running test OP.
pub struct OidcProvider {
    /// `http://127.0.0.1:PORT`, exactly as the OP puts it in `iss`.
    pub issuer: String,
    /// The node process id.
    pub pid: u32,
    /// The config it runs with.
    pub config: Value,
    /// A plain client (redirects not followed) for back-channel calls.
    pub http: reqwest::Client,
    child: tokio::process::Child,
    /// Dropping it closes the provider's stdin, and the provider exits (`--exit-with-stdin`):
    /// so it also goes when this test process dies without running destructors.
    stdin: Option<tokio::process::ChildStdin>,
    logs: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts a provider with the default config.
    pub async fn start() -> Self {
        Self::start_with(default_config()).await
    }

    /// Starts a provider with `config` (written to a temporary file; see tests/oidc/README.md).
    pub async fn start_with(config: Value) -> Self {
        let script = provider_script();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

        let mut child = tokio::process::Command::new(node())
            .arg(&script)
            .arg("--config")
            .arg(config_path)
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{} {}`: {e}; the OIDC tests need Node.js >= 20.19 (set NODE to its path)",
                    node(),
                    script.display()
                )
            });
        let stdin = child.stdin.take();
        let logs = Arc::new(Mutex::new(String::new()));
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut line = String::new();
            while let Ok(n) = stderr.read_line(&mut line).await
                && n > 0
            {
                if std::env::var_os("REMIT_TEST_OIDC_LOG").is_some() {
                    eprint!("[op] {line}");
                }
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });

        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        let why = match tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut ready)).await {
            Err(_) => Some(format!("no ready line within {START_TIMEOUT:?}")),
            Ok(Err(e)) => Some(format!("reading its stdout: {e}")),
            Ok(Ok(0)) => Some("it closed its stdout without a ready line".to_owned()),
            Ok(Ok(_)) => None,
        };
        if let Some(why) = why {
            let _ = child.start_kill();
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            // Let the stderr reader catch up.
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!("the test OP did not start ({why}; exit: {status:?}); its stderr:\n{}", logs.lock().unwrap());
        }
        let line: Value = serde_json::from_str(ready.trim())
            .unwrap_or_else(|e| panic!("the OP's ready line is not JSON ({e}): {ready:?}"));
        // Nothing else is expected on stdout; drain it so the provider never blocks on a pipe.
        tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest).await;
        });
        let issuer = line["issuer"].as_str().expect("ready line has an issuer").to_owned();
        let pid = line["pid"].as_u64().expect("ready line has a pid") as u32;
        assert_eq!(Some(pid), child.id(), "the ready line's pid is the process we started");

        OidcProvider { issuer, pid, config, http: no_redirects(), child, stdin, logs, _dir: dir }
    }

    /// Everything the provider logged so far (one line per request, interactions, errors).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// `{issuer}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The discovery document (`/.well-known/openid-configuration`).
    pub async fn discovery(&self) -> Value {
        let r = self.http.get(self.url("/.well-known/openid-configuration")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// The public JWKS.
    pub async fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        let r = self.http.get(self.url("/jwks")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// A fresh End-User agent (its own cookie jar: no session at the OP yet).
    pub fn browser(&self) -> Browser {
        Browser::new(&self.issuer)
    }

    /// A token endpoint request (`grant_type` & co. in `form`), authenticating as
    /// `client_id` with `client_secret_basic` if `secret` is given, else as a public client
    /// (`client_id` in the form). Returns the status and the JSON body.
    pub async fn token(&self, client_id: &str, secret: Option<&str>, form: &[(&str, &str)]) -> (u16, Value) {
        self.client_post("/token", client_id, secret, form).await
    }

    /// A POST to one of the OP's client-authenticated endpoints (`/token`,
    /// `/token/introspection`, `/token/revocation`), authenticating as [`Self::token`] does.
    pub async fn client_post(
        &self,
        path: &str,
        client_id: &str,
        secret: Option<&str>,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let mut req = self.http.post(self.url(path));
        match secret {
            // RFC 6749 2.3.1: both parts form-urlencoded before the Basic encoding.
            Some(s) => req = req.basic_auth(form_encode(client_id), Some(form_encode(s))),
            None => form.push(("client_id", client_id)),
        }
        let resp = req.form(&form).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Makes the OP's token endpoint hand out bad ID tokens on purpose (for the relying
    /// party's security tests): `spec` is `{"claims": {..}, "header": {..}, "key":
    /// "op"|"foreign"|"none"|"client_secret", "client_id": .., "times": n}`, see
    /// tests/oidc/README.md. E.g. `json!({"claims": {"exp": 1}})`: the next ID token is
    /// expired but properly signed.
    pub async fn tamper(&self, spec: Value) {
        let r = self.http.post(self.url("/_harness/tamper")).json(&spec).send().await.unwrap();
        let status = r.status();
        assert_eq!(status, 204, "tamper {spec}: {}", r.text().await.unwrap_or_default());
    }

    /// Clears any pending [`Self::tamper`].
    pub async fn clear_tamper(&self) {
        let r = self.http.delete(self.url("/_harness/tamper")).send().await.unwrap();
        assert_eq!(r.status(), 204);
    }

    /// Stops the provider (it closes its server and exits 0) and waits for it.
    pub async fn stop(mut self) {
        self.stdin.take();
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => assert!(status.success(), "the test OP exited with {status}; logs:\n{}", self.logs()),
            Ok(Err(e)) => panic!("waiting for the test OP: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!("the test OP did not exit within 5 s of its stdin closing; logs:\n{}", self.logs())
            }
        }
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn form_encode(s: &str) -> String {
    Url::parse_with_params("x:", [("v", s)]).unwrap().query().unwrap()["v=".len()..].to_owned()
}

/// Base64url of 32 random bytes: a state, a nonce or a PKCE verifier (43 characters).
pub fn random_token() -> String {
    remit_token::b64e(&remit_token::random::<32>())
}

/// A PKCE pair (RFC 7636, S256).
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = random_token();
        let challenge = remit_token::b64e(&remit_token::sha256(verifier.as_bytes()));
        Pkce { verifier, challenge }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// An authorization code request with PKCE (S256), a fresh state and a fresh nonce.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: String,
    pub nonce: String,
    pub pkce: Pkce,
    /// More parameters (`prompt`, `login_hint`, `max_age`, …).
    pub extra: Vec<(String, String)>,
}

impl AuthRequest {
    /// `scope` e.g. `"openid email profile groups"`; add `offline_access` (and, as OIDC
    /// requires for it, `prompt=consent`, which [`Self::offline`] does) for a refresh token.
    pub fn new(client_id: &str, redirect_uri: &str, scope: &str) -> Self {
        AuthRequest {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scope: scope.to_owned(),
            state: random_token(),
            nonce: random_token(),
            pkce: Pkce::new(),
            extra: Vec::new(),
        }
    }

    /// Asks for `offline_access` (a refresh token) the way the OP honours it: with
    /// `prompt=consent` (OIDC Core 11; without it the OP silently drops the scope).
    pub fn offline(mut self) -> Self {
        if !self.scope.split(' ').any(|s| s == "offline_access") {
            self.scope.push_str(" offline_access");
        }
        self.param("prompt", "consent")
    }

    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.extra.retain(|(n, _)| n != name);
        self.extra.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The authorization URL at `op` (from its discovery document's `authorization_endpoint`).
    pub fn url(&self, op: &OidcProvider) -> String {
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("nonce", &self.nonce),
            ("code_challenge", &self.pkce.challenge),
            ("code_challenge_method", "S256"),
        ];
        params.extend(self.extra.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        Url::parse_with_params(&op.url("/auth"), params).unwrap().to_string()
    }
}

/// What the End-User does at the OP's interaction page.
#[derive(Debug, Clone, Copy)]
pub enum Interact<'a> {
    /// Logs in as this account (its `sub`) and consents to everything asked for.
    Login(&'a str),
    /// The same, with the authentication context (`acr`) and methods (`amr`) the ID token
    /// is to carry.
    LoginWith { sub: &'a str, acr: Option<&'a str>, amr: &'a [&'a str] },
    /// Declines: the OP sends `error=access_denied` back to the client.
    Abort,
}

/// The End-User's user agent: keeps cookies (per host and path, as a browser does: not per
/// port) and never follows redirects by itself.
pub struct Browser {
    /// The OP this browser logs in at (its interactions are recognised by this prefix).
    pub issuer: String,
    pub http: reqwest::Client,
    cookies: Mutex<Vec<Cookie>>,
}

#[derive(Debug, Clone)]
struct Cookie {
    host: String,
    path: String,
    name: String,
    value: String,
}

impl Browser {
    pub fn new(issuer: &str) -> Self {
        Browser { issuer: issuer.to_owned(), http: no_redirects(), cookies: Mutex::new(Vec::new()) }
    }

    /// Whether `url` is at this browser's OP (same scheme, host and port as its issuer).
    pub fn at_op(&self, url: &Url) -> bool {
        Url::parse(&self.issuer).is_ok_and(|iss| iss.origin() == url.origin())
    }

    fn cookie_header(&self, url: &Url) -> Option<String> {
        let host = url.host_str().unwrap_or_default();
        let path = url.path();
        let jar = self.cookies.lock().unwrap();
        let mut matching: Vec<&Cookie> = jar
            .iter()
            .filter(|c| {
                // RFC 6265 5.1.4 path-match.
                c.host == host
                    && path
                        .strip_prefix(c.path.as_str())
                        .is_some_and(|rest| rest.is_empty() || c.path.ends_with('/') || rest.starts_with('/'))
            })
            .collect();
        // Longer paths first, as browsers send them.
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        let header = matching.iter().map(|c| format!("{}={}", c.name, c.value)).collect::<Vec<_>>().join("; ");
        (!header.is_empty()).then_some(header)
    }

    fn store_cookies(&self, url: &Url, resp: &reqwest::Response) {
        let host = url.host_str().unwrap_or_default().to_owned();
        let mut jar = self.cookies.lock().unwrap();
        for h in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let Ok(h) = h.to_str() else { continue };
            let mut parts = h.split(';').map(str::trim);
            let Some((name, value)) = parts.next().and_then(|kv| kv.split_once('=')) else { continue };
            let mut path = "/".to_owned();
            let mut expired = value.is_empty();
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.to_ascii_lowercase().as_str() {
                    "path" if v.starts_with('/') => path = v.to_owned(),
                    "max-age" => expired |= v.parse::<i64>().is_ok_and(|s| s <= 0),
                    "expires" => expired |= v.contains("1970"),
                    _ => {}
                }
            }
            jar.retain(|c| !(c.host == host && c.path == path && c.name == name));
            if !expired {
                jar.push(Cookie { host: host.clone(), path, name: name.to_owned(), value: value.to_owned() });
            }
        }
    }

    /// Sends a request with this browser's cookies and keeps the ones it sets.
    pub async fn send(&self, method: reqwest::Method, url: &str, form: Option<&[(&str, &str)]>) -> reqwest::Response {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("not a URL ({e}): {url}"));
        let mut req = self.http.request(method, parsed.clone());
        if let Some(c) = self.cookie_header(&parsed) {
            req = req.header(reqwest::header::COOKIE, c);
        }
        if let Some(f) = form {
            req = req.form(f);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        self.store_cookies(&parsed, &resp);
        resp
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, url, None).await
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.send(reqwest::Method::POST, url, Some(form)).await
    }

    /// Follows `url` (an authorization request, or an RP URL that redirects to one) through
    /// redirects, logging in at the OP's headless login as `sub` (and consenting), until the OP
    /// redirects to a URL outside itself (the client's redirect URI, carrying `code`, `state`
    /// and `iss`, or an `error`): returns that URL, without requesting it.
    pub async fn authorize(&self, url: &str, sub: &str) -> Url {
        self.try_authorize(url, Interact::Login(sub)).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Self::authorize`], with the End-User's choice, and an error (the status and body of
    /// the page the flow stopped on, e.g. the OP's error for a bad `redirect_uri`) instead of a
    /// panic when the flow does not end in a redirect back to the client.
    pub async fn try_authorize(&self, url: &str, who: Interact<'_>) -> Result<Url, String> {
        let mut url = Url::parse(url).map_err(|e| format!("not a URL ({e}): {url}"))?;
        let mut interactions = 0;
        for _ in 0..30 {
            let at_op = self.at_op(&url);
            let is_interaction =
                at_op && url.path().starts_with("/interaction/") && url.path().matches('/').count() == 2;
            let resp = if is_interaction {
                // The headless login: the OP's interaction page takes a form POST.
                interactions += 1;
                if interactions > 3 {
                    return Err(format!("the OP keeps asking for interaction (last at {url})"));
                }
                match who {
                    Interact::Login(sub) => self.post_form(&format!("{url}/login"), &[("login", sub)]).await,
                    Interact::LoginWith { sub, acr, amr } => {
                        let amr = amr.join(",");
                        let mut form = vec![("login", sub), ("amr", amr.as_str())];
                        if let Some(acr) = acr {
                            form.push(("acr", acr));
                        }
                        self.post_form(&format!("{url}/login"), &form).await
                    }
                    Interact::Abort => self.post_form(&format!("{url}/abort"), &[]).await,
                }
            } else {
                self.get(url.as_str()).await
            };
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| format!("{status} without a Location from {url}"))?;
                let next = url.join(location).map_err(|e| format!("bad Location {location:?} from {url}: {e}"))?;
                if at_op && !self.at_op(&next) {
                    return Ok(next);
                }
                url = next;
                continue;
            }
            let body = resp.text().await.unwrap_or_default();
            return Err(format!("the authorization flow stopped at {url}: {status}: {body}"));
        }
        Err(format!("too many redirects (last {url})"))
    }

    /// RP-initiated logout at the OP: GET the end-session endpoint with `params`
    /// (`id_token_hint`, `post_logout_redirect_uri`, `state`, `client_id`), confirm the OP's
    /// logout form, and return where the OP sends the browser (the post-logout redirect URI, or
    /// the OP's own "signed out" page).
    pub async fn logout(&self, params: &[(&str, &str)]) -> Url {
        let start = Url::parse_with_params(&format!("{}/session/end", self.issuer), params).unwrap();
        let resp = self.get(start.as_str()).await;
        assert_eq!(resp.status(), 200, "end_session at {start}");
        let page = resp.text().await.unwrap();
        let xsrf = page
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no xsrf in the OP's logout page:\n{page}"))
            .to_owned();
        let resp = self
            .post_form(&format!("{}/session/end/confirm", self.issuer), &[("xsrf", &xsrf), ("logout", "yes")])
            .await;
        assert!(resp.status().is_redirection(), "logout confirm: {}", resp.status());
        let location = resp.headers()[reqwest::header::LOCATION].to_str().unwrap().to_owned();
        Url::parse(&self.issuer).unwrap().join(&location).unwrap()
    }
}

/// The query parameters of `url` as a JSON object (`code`, `state`, `iss`, `error`, …).
pub fn query(url: &Url) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in url.query_pairs() {
        m.insert(k.into_owned(), json!(v.into_owned()));
    }
    Value::Object(m)
}

/// Verifies an ID token's signature against `jwks` (by `kid`) and its `iss`, `aud` and `exp`,
/// accepting only `alg`; returns its claims. The `nonce` is the caller's to check.
pub fn verify_id_token(
    id_token: &str,
    jwks: &jsonwebtoken::jwk::JwkSet,
    alg: jsonwebtoken::Algorithm,
    issuer: &str,
    audience: &str,
) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(id_token).map_err(|e| format!("header: {e}"))?;
    if header.alg != alg {
        return Err(format!("alg is {:?}, expected {alg:?}", header.alg));
    }
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| format!("jwk {kid}: {e}"))?;
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    v.leeway = 0;
    jsonwebtoken::decode::<Value>(id_token, &key, &v).map(|d| d.claims).map_err(|e| format!("{e}"))
}
