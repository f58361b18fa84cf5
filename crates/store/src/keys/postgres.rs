//! The keys area on PostgreSQL: the installation record in `meta`, key rows in `keys`.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::time::UnixMillis;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{Installation, KeyPurpose, KeyStore, Reseal, RetiringKey, StoredKey};
use crate::postgres::rows::{corrupt, ms, ms_opt, s, so};
use crate::postgres::{PgStore, WriteCtx, map_err, pg_read};
use crate::{Change, Result, StoreError};

#[async_trait]
impl KeyStore for PgStore {
    async fn installation(&self) -> Result<Option<Installation>> {
        pg_read!(self, |c| installation(c))
    }
    async fn install(&self, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(install(c, inst, keys, audit))).await
    }
    async fn list(&self) -> Result<Vec<StoredKey>> {
        let now = self.clock.now();
        pg_read!(self, |c| keys(c, now))
    }
    async fn rotate(&self, new: StoredKey, old: RetiringKey, audit: AuditEvent) -> Result<u64> {
        self.write(move |c| Box::pin(rotate_key(c, new, old, audit))).await
    }
    async fn reseal(&self, seal: Reseal, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(reseal(c, seal, audit))).await
    }
    async fn add(&self, new: StoredKey, audit: AuditEvent) -> Result<u64> {
        self.write(move |c| Box::pin(add_key(c, new, audit))).await
    }
    async fn bundle_sequence(&self) -> Result<u64> {
        pg_read!(self, |c| bundle_sequence(c))
    }
}

fn conflict(msg: impl Into<String>) -> StoreError {
    StoreError::Conflict(msg.into())
}

fn key_row(r: &PgRow) -> Result<StoredKey> {
    let purpose = s(r, 1)?;
    let Some(purpose) = KeyPurpose::parse(&purpose) else {
        return Err(corrupt(1, format!("unknown key purpose `{purpose}`")));
    };
    Ok(StoredKey {
        kid: s(r, 0)?,
        purpose,
        sealed: r.try_get(2).map_err(map_err)?,
        public: r.try_get(3).map_err(map_err)?,
        created_at: ms(r, 4)?,
        retire_after: ms_opt(r, 5)?,
        mac: so(r, 6)?,
        cert: r.try_get(7).map_err(map_err)?,
    })
}

async fn installation(c: &mut PgConnection) -> Result<Option<Installation>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, value FROM meta WHERE key IN \
             ('trust_domain', 'admin_hash', 'installed_at', 'issuer', 'installation_mac')",
    )
    .fetch_all(c)
    .await
    .map_err(map_err)?;
    let get = |k: &str| rows.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let (Some(td), Some(h), Some(at)) = (get("trust_domain"), get("admin_hash"), get("installed_at")) else {
        return Ok(None);
    };
    let at = at.parse().map_err(|_| StoreError::Corrupt("installed_at".into()))?;
    Ok(Some(Installation {
        trust_domain: td,
        issuer: get("issuer"),
        admin_hash: h,
        installed_at: UnixMillis(at),
        mac: get("installation_mac"),
    }))
}

async fn put_meta(c: &mut PgConnection, k: &str, v: &str) -> Result<()> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(k)
        .bind(v)
        .execute(c)
        .await
        .map_err(map_err)?;
    Ok(())
}

async fn insert_key(c: &mut PgConnection, k: &StoredKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO keys (kid, purpose, sealed, public, created_at, retire_after, mac, cert) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&k.kid)
    .bind(k.purpose.as_str())
    .bind(&k.sealed)
    .bind(&k.public)
    .bind(k.created_at.0)
    .bind(k.retire_after.map(|t| t.0))
    .bind(&k.mac)
    .bind(&k.cert)
    .execute(c)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn install(ctx: &mut WriteCtx, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()> {
    if installation(ctx.conn()).await?.is_some() {
        return Err(conflict("remit is already initialized"));
    }
    put_meta(ctx.conn(), "trust_domain", &inst.trust_domain).await?;
    put_meta(ctx.conn(), "admin_hash", &inst.admin_hash).await?;
    put_meta(ctx.conn(), "installed_at", &inst.installed_at.0.to_string()).await?;
    if let Some(iss) = &inst.issuer {
        put_meta(ctx.conn(), "issuer", iss).await?;
    }
    if let Some(mac) = &inst.mac {
        put_meta(ctx.conn(), "installation_mac", mac).await?;
    }
    put_meta(ctx.conn(), "bundle_sequence", "1").await?;
    for k in &keys {
        insert_key(ctx.conn(), k).await?;
    }
    ctx.audit(audit)?;
    Ok(())
}

async fn keys(c: &mut PgConnection, now: UnixMillis) -> Result<Vec<StoredKey>> {
    let sql = format!(
        "SELECT {} FROM keys WHERE retire_after IS NULL OR retire_after > $1 ORDER BY created_at, kid",
        super::KEY_COLS
    );
    let rs = sqlx::query(&sql).bind(now.0).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(key_row).collect()
}

async fn bundle_sequence(c: &mut PgConnection) -> Result<u64> {
    let v: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'bundle_sequence'")
        .fetch_optional(c)
        .await
        .map_err(map_err)?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

async fn rotate_key(ctx: &mut WriteCtx, new: StoredKey, old: RetiringKey, audit: AuditEvent) -> Result<u64> {
    let n = sqlx::query(
        "UPDATE keys SET retire_after = $1, mac = $2 WHERE kid = $3 AND purpose = $4 AND retire_after IS NULL",
    )
    .bind(old.retire_after.0)
    .bind(&old.mac)
    .bind(&old.kid)
    .bind(new.purpose.as_str())
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(conflict(format!("key `{}` is no longer the active {} key", old.kid, new.purpose.as_str())));
    }
    insert_key(ctx.conn(), &new).await?;
    let seq = bundle_sequence(ctx.conn()).await? + 1;
    put_meta(ctx.conn(), "bundle_sequence", &seq.to_string()).await?;
    ctx.audit(audit)?;
    ctx.changed([Change::Keys]);
    Ok(seq)
}

/// The partial unique index `keys_one_active` keeps a racing replica's second key out.
async fn add_key(ctx: &mut WriteCtx, new: StoredKey, audit: AuditEvent) -> Result<u64> {
    insert_key(ctx.conn(), &new).await.map_err(|e| match e {
        StoreError::Conflict(_) => conflict(format!("an active {} key exists", new.purpose.as_str())),
        e => e,
    })?;
    let seq = bundle_sequence(ctx.conn()).await? + 1;
    put_meta(ctx.conn(), "bundle_sequence", &seq.to_string()).await?;
    ctx.audit(audit)?;
    ctx.changed([Change::Keys]);
    Ok(seq)
}

async fn reseal(ctx: &mut WriteCtx, seal: Reseal, audit: AuditEvent) -> Result<()> {
    if installation(ctx.conn()).await?.is_none() {
        return Err(conflict("remit is not initialized"));
    }
    put_meta(ctx.conn(), "issuer", &seal.issuer).await?;
    put_meta(ctx.conn(), "installation_mac", &seal.installation_mac).await?;
    for (kid, mac) in &seal.key_macs {
        let n = sqlx::query("UPDATE keys SET mac = $1 WHERE kid = $2")
            .bind(mac)
            .bind(kid)
            .execute(ctx.conn())
            .await
            .map_err(map_err)?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::not_found("key", kid));
        }
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Keys]);
    Ok(())
}
