//! The keys area on SQLite: the installation record in `meta`, key rows in `keys`.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::time::UnixMillis;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Installation, KeyPurpose, KeyStore, Reseal, RetiringKey, StoredKey};
use crate::sqlite::rows::{bad, ms, ms_opt};
use crate::sqlite::{SqliteStore, WriteCtx, map_err};
use crate::{Change, Result, StoreError};

#[async_trait]
impl KeyStore for SqliteStore {
    async fn installation(&self) -> Result<Option<Installation>> {
        self.read(installation).await
    }
    async fn install(&self, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()> {
        self.write(move |c| install(c, inst, keys, audit)).await
    }
    async fn list(&self) -> Result<Vec<StoredKey>> {
        let now = self.clock.now();
        self.read(move |c| keys(c, now)).await
    }
    async fn rotate(&self, new: StoredKey, old: RetiringKey, audit: AuditEvent) -> Result<u64> {
        self.write(move |c| rotate_key(c, new, old, audit)).await
    }
    async fn reseal(&self, seal: Reseal, audit: AuditEvent) -> Result<()> {
        self.write(move |c| reseal(c, seal, audit)).await
    }
    async fn add(&self, new: StoredKey, audit: AuditEvent) -> Result<u64> {
        self.write(move |c| add_key(c, new, audit)).await
    }
    async fn bundle_sequence(&self) -> Result<u64> {
        self.read(bundle_sequence).await
    }
}

fn conflict(msg: impl Into<String>) -> StoreError {
    StoreError::Conflict(msg.into())
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<StoredKey> {
    let purpose: String = r.get(1)?;
    let Some(purpose) = KeyPurpose::parse(&purpose) else {
        return Err(bad(1, format!("unknown key purpose `{purpose}`")));
    };
    Ok(StoredKey {
        kid: r.get(0)?,
        purpose,
        sealed: r.get(2)?,
        public: r.get(3)?,
        created_at: ms(r, 4)?,
        retire_after: ms_opt(r, 5)?,
        mac: r.get(6)?,
        cert: r.get(7)?,
    })
}

fn installation(c: &Connection) -> Result<Option<Installation>> {
    let get = |k: &str| -> Result<Option<String>> {
        c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0)).optional().map_err(map_err)
    };
    let (Some(td), Some(h), Some(at)) = (get("trust_domain")?, get("admin_hash")?, get("installed_at")?) else {
        return Ok(None);
    };
    let at = at.parse().map_err(|_| StoreError::Corrupt("installed_at".into()))?;
    Ok(Some(Installation {
        trust_domain: td,
        issuer: get("issuer")?,
        admin_hash: h,
        installed_at: UnixMillis(at),
        mac: get("installation_mac")?,
    }))
}

fn put_meta(c: &Connection, k: &str, v: &str) -> Result<()> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [k, v],
    )
    .map_err(map_err)?;
    Ok(())
}

fn insert_key(c: &Connection, k: &StoredKey) -> Result<()> {
    c.execute(
        "INSERT INTO keys (kid, purpose, sealed, public, created_at, retire_after, mac, cert) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            k.kid,
            k.purpose.as_str(),
            k.sealed,
            k.public,
            k.created_at.0,
            k.retire_after.map(|t| t.0),
            k.mac,
            k.cert
        ],
    )
    .map_err(map_err)?;
    Ok(())
}

fn install(ctx: &mut WriteCtx<'_>, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()> {
    if installation(ctx.conn)?.is_some() {
        return Err(conflict("remit is already initialized"));
    }
    put_meta(ctx.conn, "trust_domain", &inst.trust_domain)?;
    put_meta(ctx.conn, "admin_hash", &inst.admin_hash)?;
    put_meta(ctx.conn, "installed_at", &inst.installed_at.0.to_string())?;
    if let Some(iss) = &inst.issuer {
        put_meta(ctx.conn, "issuer", iss)?;
    }
    if let Some(mac) = &inst.mac {
        put_meta(ctx.conn, "installation_mac", mac)?;
    }
    put_meta(ctx.conn, "bundle_sequence", "1")?;
    for k in &keys {
        insert_key(ctx.conn, k)?;
    }
    ctx.audit(audit)?;
    Ok(())
}

fn keys(c: &Connection, now: UnixMillis) -> Result<Vec<StoredKey>> {
    let sql = format!(
        "SELECT {} FROM keys WHERE retire_after IS NULL OR retire_after > ?1 ORDER BY created_at",
        super::KEY_COLS
    );
    let mut s = c.prepare_cached(&sql).map_err(map_err)?;
    let out = s.query_map([now.0], key_row).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

fn bundle_sequence(c: &Connection) -> Result<u64> {
    let v: Option<String> = c
        .query_row("SELECT value FROM meta WHERE key = 'bundle_sequence'", [], |r| r.get(0))
        .optional()
        .map_err(map_err)?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn rotate_key(ctx: &mut WriteCtx<'_>, new: StoredKey, old: RetiringKey, audit: AuditEvent) -> Result<u64> {
    let n = ctx
        .conn
        .execute(
            "UPDATE keys SET retire_after = ?1, mac = ?2 WHERE kid = ?3 AND purpose = ?4 AND retire_after IS NULL",
            params![old.retire_after.0, old.mac, old.kid, new.purpose.as_str()],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(conflict(format!("key `{}` is no longer the active {} key", old.kid, new.purpose.as_str())));
    }
    insert_key(ctx.conn, &new)?;
    let seq = bundle_sequence(ctx.conn)? + 1;
    put_meta(ctx.conn, "bundle_sequence", &seq.to_string())?;
    ctx.audit(audit)?;
    ctx.changed([Change::Keys]);
    Ok(seq)
}

fn add_key(ctx: &mut WriteCtx<'_>, new: StoredKey, audit: AuditEvent) -> Result<u64> {
    // The partial unique index `keys_one_active` refuses a second active key of a purpose.
    insert_key(ctx.conn, &new).map_err(|e| match e {
        StoreError::Conflict(_) => conflict(format!("an active {} key exists", new.purpose.as_str())),
        e => e,
    })?;
    let seq = bundle_sequence(ctx.conn)? + 1;
    put_meta(ctx.conn, "bundle_sequence", &seq.to_string())?;
    ctx.audit(audit)?;
    ctx.changed([Change::Keys]);
    Ok(seq)
}

fn reseal(ctx: &mut WriteCtx<'_>, seal: Reseal, audit: AuditEvent) -> Result<()> {
    if installation(ctx.conn)?.is_none() {
        return Err(conflict("remit is not initialized"));
    }
    put_meta(ctx.conn, "issuer", &seal.issuer)?;
    put_meta(ctx.conn, "installation_mac", &seal.installation_mac)?;
    for (kid, mac) in &seal.key_macs {
        let n = ctx.conn.execute("UPDATE keys SET mac = ?1 WHERE kid = ?2", params![mac, kid]).map_err(map_err)?;
        if n == 0 {
            return Err(StoreError::not_found("key", kid));
        }
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Keys]);
    Ok(())
}
