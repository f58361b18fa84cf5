//! The HTTP client the commands share: base URL, credentials, and the mapping from HTTP
//! answers to [`CliError`] exit codes.

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::{CliError, Global};

pub struct Client {
    http: reqwest::Client,
    base: String,
    /// The Unix socket requests go to, when `base` was `unix:PATH`.
    unix: Option<std::path::PathBuf>,
    bearer: Option<String>,
    operator: Option<String>,
}

/// Reads the admin credential from the flag/env, else the data directory's file.
pub fn admin_token(g: &Global) -> Option<String> {
    g.admin_token.clone().or_else(|| {
        std::fs::read_to_string(g.data_dir.join(remit_server::init::ADMIN_TOKEN_FILE)).ok().map(|s| s.trim().to_owned())
    })
}

impl Client {
    /// A client for `base`: an `http(s)://` URL, or `unix:PATH` for the admin listener's
    /// Unix socket.
    pub fn new(base: &str, bearer: Option<String>, operator: Option<String>) -> Result<Self, CliError> {
        let unix = base.strip_prefix("unix:").map(|p| std::path::PathBuf::from(p.trim_start_matches("//")));
        let base = if unix.is_some() { "http://localhost".to_owned() } else { base.trim_end_matches('/').to_owned() };
        let b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        let http = Self::build(b, unix.as_ref())?;
        Ok(Client { http, base, unix, bearer, operator })
    }

    fn build(b: reqwest::ClientBuilder, unix: Option<&std::path::PathBuf>) -> Result<reqwest::Client, CliError> {
        let mut b = b.user_agent(concat!("remit-cli/", env!("CARGO_PKG_VERSION")));
        let tls_err = |what: &str, e: &dyn std::fmt::Display| CliError::Failed(format!("{what}: {e}"));
        // A CA to trust besides the system's (a self-signed server: `<data-dir>/tls.crt`).
        if let Ok(path) = std::env::var("REMIT_TLS_CA") {
            let pem = std::fs::read(&path).map_err(|e| tls_err(&format!("REMIT_TLS_CA {path}"), &e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| tls_err("REMIT_TLS_CA", &e))?;
            b = b.tls_certs_merge(certs);
        }
        // A client certificate (an X.509-SVID, e.g. written by spiffe-helper): mutual TLS
        // authenticates the agent instance without a bearer token.
        if let (Ok(cert), Ok(key)) = (std::env::var("REMIT_TLS_CLIENT_CERT"), std::env::var("REMIT_TLS_CLIENT_KEY")) {
            let mut pem = std::fs::read(&key).map_err(|e| tls_err(&format!("REMIT_TLS_CLIENT_KEY {key}"), &e))?;
            pem.extend(std::fs::read(&cert).map_err(|e| tls_err(&format!("REMIT_TLS_CLIENT_CERT {cert}"), &e))?);
            b = b.identity(reqwest::Identity::from_pem(&pem).map_err(|e| tls_err("client certificate", &e))?);
        }
        if let Some(p) = unix {
            b = b.unix_socket(p.clone());
        }
        b.build().map_err(|e| CliError::Failed(format!("http client: {e}")))
    }

    /// The same client for long-lived streams: no overall deadline, but a read that stalls
    /// for longer than `idle` (the server sends a keep-alive well within it) fails.
    pub fn streaming(&self, idle: std::time::Duration) -> Result<Self, CliError> {
        let b = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(10)).read_timeout(idle);
        Ok(Client {
            http: Self::build(b, self.unix.as_ref())?,
            base: self.base.clone(),
            unix: self.unix.clone(),
            bearer: self.bearer.clone(),
            operator: self.operator.clone(),
        })
    }

    /// Starts a GET whose body the caller reads as it arrives. Non-2xx answers are errors
    /// mapped like every other call.
    pub async fn get_stream(&self, path: &str) -> Result<reqwest::Response, CliError> {
        self.send(self.request(Method::GET, path)).await
    }

    /// A client for Remit's admin API: with `--admin-token`/`REMIT_ADMIN_TOKEN` if given (the
    /// break-glass credential), else the signed-in human's session for this server (`remit
    /// login`; refreshed first when it is about to expire), else the data directory's
    /// `admin-token` file.
    pub async fn admin(g: &Global) -> Result<Self, CliError> {
        let operator = || g.operator.clone().or_else(|| std::env::var("USER").ok());
        if let Some(t) = &g.admin_token {
            return Self::new(&g.url, Some(t.clone()), operator());
        }
        if let Some(c) = Self::session(g).await? {
            return Ok(c);
        }
        let token = admin_token(g).ok_or_else(|| {
            CliError::Failed(format!(
                "not signed in (`remit login`) and no admin credential: set REMIT_ADMIN_TOKEN or --admin-token, or \
                 point --data-dir at the directory holding `admin-token` (looked in {})",
                g.data_dir.display()
            ))
        })?;
        Self::new(&g.url, Some(token), operator())
    }

    /// A client with the signed-in human's session for this server, or an error saying to sign in.
    pub async fn signed_in(g: &Global) -> Result<Self, CliError> {
        Self::session(g)
            .await?
            .ok_or_else(|| CliError::Denied("not signed in to this server: run `remit login`".into()))
    }

    /// The saved session for `--url`, refreshed when it expires within a minute.
    async fn session(g: &Global) -> Result<Option<Self>, CliError> {
        let Some(path) = crate::session::path(g.session_file.as_deref()) else { return Ok(None) };
        let Some(mut saved) = crate::session::load(&path) else { return Ok(None) };
        if saved.url.trim_end_matches('/') != g.url.trim_end_matches('/') {
            return Ok(None);
        }
        if saved.expires_at - crate::session::now_ms() < 60_000 {
            let anon = Self::new(&g.url, None, None)?;
            let body = serde_json::json!({"grant_type": "refresh_token", "refresh_token": saved.refresh_token});
            let t = match anon.post("/v1/auth/token", &body).await {
                Ok(t) => t,
                Err(CliError::Denied(m)) => {
                    crate::session::remove(&path);
                    return Err(CliError::Denied(format!("the session has ended ({m}): run `remit login`")));
                }
                Err(e) => return Err(e),
            };
            saved.access_token = t["access_token"].as_str().unwrap_or_default().to_owned();
            saved.refresh_token = t["refresh_token"].as_str().unwrap_or_default().to_owned();
            saved.expires_at = crate::session::now_ms() + t["expires_in"].as_i64().unwrap_or(0) * 1000;
            crate::session::save(&path, &saved)?;
        }
        Self::new(&g.url, Some(saved.access_token), None).map(Some)
    }

    pub fn with_bearer(&self, bearer: &str) -> Self {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            unix: self.unix.clone(),
            bearer: Some(bearer.to_owned()),
            operator: None,
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = &self.bearer {
            r = r.bearer_auth(b);
        }
        if let Some(o) = &self.operator {
            r = r.header("x-remit-operator", o);
        }
        r
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let resp = req.send().await.map_err(|e| {
            CliError::Unavailable(format!("cannot reach the remit server at {}: {}", self.base, root_cause(&e)))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        // Remit's errors carry `message`; the OAuth endpoints' carry `error` and `error_description`.
        let msg = match (body.get("message"), body.get("error_description")) {
            (Some(Value::String(m)), _) => m.clone(),
            (_, Some(Value::String(d))) => format!("{}: {d}", body["error"].as_str().unwrap_or("error")),
            _ => "request failed".to_owned(),
        };
        let msg = match body.get("error_id").and_then(Value::as_str) {
            Some(id) => format!("{msg} (error id {id})"),
            None => msg,
        };
        Err(match status {
            StatusCode::FORBIDDEN => CliError::Denied(msg),
            StatusCode::UNAUTHORIZED => CliError::Denied(format!("unauthenticated: {msg}")),
            StatusCode::NOT_FOUND => CliError::NotFound(msg),
            StatusCode::SERVICE_UNAVAILABLE => CliError::Unavailable(msg),
            s => CliError::Failed(format!("{msg} (HTTP {})", s.as_u16())),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.json(self.send(self.request(Method::GET, path)).await?).await
    }

    pub async fn get_query(&self, path: &str, q: &[(&str, String)]) -> Result<reqwest::Response, CliError> {
        self.send(self.request(Method::GET, path).query(q)).await
    }

    pub async fn post(&self, path: &str, body: &impl Serialize) -> Result<Value, CliError> {
        self.json(self.send(self.request(Method::POST, path).json(body)).await?).await
    }

    pub async fn put(&self, path: &str, body: &impl Serialize) -> Result<Value, CliError> {
        self.json(self.send(self.request(Method::PUT, path).json(body)).await?).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.json(self.send(self.request(Method::DELETE, path)).await?).await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, CliError> {
        self.json(self.send(self.request(Method::POST, path).form(form)).await?).await
    }

    /// Posts a form and returns the status and JSON body whatever the status (the OAuth
    /// endpoints answer errors in their own shape).
    pub async fn post_form_raw(&self, path: &str, form: &[(&str, &str)]) -> Result<(StatusCode, Value), CliError> {
        let resp = self.request(Method::POST, path).form(form).send().await.map_err(|e| {
            CliError::Unavailable(format!("cannot reach the remit server at {}: {}", self.base, root_cause(&e)))
        })?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn json(&self, resp: reqwest::Response) -> Result<Value, CliError> {
        resp.json().await.map_err(|e| CliError::Failed(format!("unreadable answer from server: {e}")))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Parses a duration into seconds: a plain number of seconds (`90`) or numbers with units,
/// `s`, `m`, `h`, `d` (also `sec`, `min`, `hour`, `day` and plurals), combined as in `1h30m`.
/// Units people might mean differently (`M`: minutes or months?, `y`, `w`, `ms`) are refused,
/// as are negative durations.
pub fn parse_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("`{s}`: a duration cannot be negative"));
    }
    if t.is_empty() {
        return Err("a duration is required, e.g. 90s, 5m, 1h30m".into());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{s}`: expected a number at `{rest}` (e.g. 90s, 5m, 1h30m)"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("`{s}`: number too large"))?;
        rest = rest[digits..].trim_start();
        let ulen = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..ulen];
        rest = rest[ulen..].trim_start();
        let mult = match unit {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "" => return Err(format!("`{s}`: a unit is needed after {n} when several parts are given (s, m, h, d)")),
            other => {
                return Err(format!(
                    "`{s}`: unknown or ambiguous unit `{other}`; use s (seconds), m (minutes), h (hours) or d (days)"
                ));
            }
        };
        total = n.checked_mul(mult).and_then(|v| total.checked_add(v)).ok_or_else(|| format!("`{s}`: too long"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_mean_what_people_mean() {
        for (text, secs) in [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d", 172_800), ("10 min", 600)] {
            assert_eq!(parse_secs(text), Ok(secs), "{text}");
        }
        for bad in ["-1s", "-5", "5M", "1y", "2w", "500ms", "", "m", "1h30", "abc"] {
            let e = parse_secs(bad).unwrap_err();
            assert!(!e.contains("tip"), "{bad}: {e}");
        }
        assert!(parse_secs("-1s").unwrap_err().contains("negative"));
        assert!(parse_secs("5M").unwrap_err().contains("ambiguous"));
        use remit_core::time::format_secs;
        assert_eq!(format_secs(300), "5m");
        assert_eq!(format_secs(5400), "1h30m");
        assert_eq!(format_secs(59), "59s");
    }
}
