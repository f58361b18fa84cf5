//! X.509-SVIDs: the trust domain's CA certificate and the short-lived leaf certificates it
//! signs, per the SPIFFE X509-SVID specification.
//!
//! - A CA is an ES256 [`SigningKey`] (sealed at rest like the JWT keys) with a certificate:
//!   self-signed, `cA=true`, key usage `keyCertSign`+`cRLSign` (critical), and the trust
//!   domain's ID as its one URI SAN. An operator's upstream CA may sign it instead; then its
//!   chain (the CA certificate first, up to but excluding the root) is sent with every leaf.
//! - A leaf has exactly one URI SAN (its SPIFFE ID), `cA=false`, key usage
//!   `digitalSignature` only (critical), EKU serverAuth+clientAuth, a random 128-bit serial,
//!   and a validity that never outlives its CA's.
//! - [`check_svid`] is the validator's side (used for client certificates): it parses a leaf
//!   and applies the same rules, returning its SPIFFE ID.
//!
//! No IO and no clock: callers pass `now`, serial numbers and keys in.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use remit_core::time::UnixMillis;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::SigningKey;

/// Clock skew a fresh leaf tolerates: its `notBefore` is this far in the past.
const BACKDATE_MS: i64 = 30_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error("not an X.509-SVID: {0}")]
    NotSvid(&'static str),
    #[error("the upstream CA: {0}")]
    Upstream(String),
}

fn generate(e: impl std::fmt::Display) -> X509Error {
    X509Error::Generate(e.to_string())
}

fn datetime(t: UnixMillis) -> Result<OffsetDateTime, X509Error> {
    OffsetDateTime::from_unix_timestamp(t.0.div_euclid(1000)).map_err(generate)
}

/// A positive serial number from 16 random bytes (the top bit cleared, never zero).
fn serial(random: [u8; 16]) -> SerialNumber {
    let mut b = random;
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

fn rcgen_key(key: &SigningKey) -> Result<KeyPair, X509Error> {
    let der = key.pkcs8().map_err(generate)?;
    KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), &PKCS_ECDSA_P256_SHA256).map_err(generate)
}

fn name(org: &str, cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    dn
}

fn uri(s: &str) -> Result<SanType, X509Error> {
    Ok(SanType::URI(s.try_into().map_err(generate)?))
}

/// The trust domain's CA certificate's fields: the trust domain's ID as its one URI SAN,
/// `cA=true` with path length 0 (it signs leaves only, never another CA), key usage
/// `keyCertSign`+`cRLSign`.
fn ca_params(
    trust_domain_id: &str,
    now: UnixMillis,
    until: UnixMillis,
    random: [u8; 16],
) -> Result<CertificateParams, X509Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = name("Remit", &format!("{trust_domain_id} CA"));
    p.subject_alt_names = vec![uri(trust_domain_id)?];
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(serial(random));
    p.not_before = datetime(UnixMillis(now.0.saturating_sub(BACKDATE_MS)))?;
    p.not_after = datetime(until)?;
    Ok(p)
}

/// A new self-signed CA certificate for `trust_domain_id` (`spiffe://<td>`), valid from now
/// for `ttl_secs`.
pub fn self_signed_ca(
    key: &SigningKey,
    trust_domain_id: &str,
    now: UnixMillis,
    ttl_secs: u64,
    random: [u8; 16],
) -> Result<Vec<u8>, X509Error> {
    let p = ca_params(trust_domain_id, now, now.plus_secs(ttl_secs), random)?;
    let kp = rcgen_key(key)?;
    Ok(p.self_signed(&kp).map_err(generate)?.der().to_vec())
}

/// An operator's upstream CA, which signs the trust domain's CA as an intermediate (SPIRE's
/// `disk` upstream authority): its private key (P-256, P-384, Ed25519 or RSA; PKCS#8, SEC1
/// or PKCS#1 PEM) and its certificate chain, its own certificate first and the self-signed
/// root last (one certificate when it is the root itself).
pub struct Upstream {
    key: KeyPair,
    chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({} certificates)", self.chain.len())
    }
}

fn upstream(why: impl std::fmt::Display) -> X509Error {
    X509Error::Upstream(why.to_string())
}

/// The certificates of a PEM text, in order (other PEM blocks are ignored).
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, X509Error> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| X509Error::Malformed(e.to_string()))?;
        if block.label == "CERTIFICATE" {
            parse(&block.contents)?;
            out.push(block.contents);
        }
    }
    Ok(out)
}

impl Upstream {
    /// Loads and checks an upstream CA: its first certificate is a CA certificate (with
    /// `keyCertSign` if it states a key usage, and a path length that leaves room for one
    /// CA below it) whose public key is the key's; each certificate is issued and signed by
    /// the next; the last is a self-signed root.
    pub fn from_pem(cert_pem: &[u8], key_pem: &str) -> Result<Upstream, X509Error> {
        let chain = pem_certificates(cert_pem)?;
        let Some(first) = chain.first() else { return Err(upstream("its certificate file holds no CERTIFICATE")) };
        let key = KeyPair::from_pem(key_pem).map_err(|e| upstream(format!("its key file: {e}")))?;
        let ca = parse(first)?;
        // Every certificate of the chain is a CA that may sign certificates, with room for
        // the CAs below it: the rest of the chain under it, and the trust domain's CA.
        for (i, der) in chain.iter().enumerate() {
            let c = parse(der)?;
            match c.basic_constraints() {
                Ok(Some(bc)) if bc.value.ca => {
                    if bc.value.path_len_constraint.is_some_and(|n| (n as usize) < i + 1) {
                        return Err(upstream(format!(
                            "certificate {} of its file has a path length that leaves no room for the trust domain's CA",
                            i + 1
                        )));
                    }
                }
                _ => return Err(upstream(format!("certificate {} of its file is not a CA certificate", i + 1))),
            }
            if let Ok(Some(ku)) = c.key_usage()
                && !ku.value.key_cert_sign()
            {
                return Err(upstream(format!(
                    "certificate {} of its file has a key usage that does not allow signing certificates",
                    i + 1
                )));
            }
        }
        if *ca.public_key().subject_public_key.data != *key.der_bytes() {
            return Err(upstream("its key is not the key of its certificate"));
        }
        let parsed = chain.iter().map(|c| parse(c)).collect::<Result<Vec<_>, _>>()?;
        for pair in parsed.windows(2) {
            if pair[0].issuer() != pair[1].subject() || pair[0].verify_signature(Some(pair[1].public_key())).is_err() {
                return Err(upstream("each certificate in its file must be issued by the next"));
            }
        }
        let root = parsed.last().ok_or_else(|| upstream("no root"))?;
        if root.issuer() != root.subject() || root.verify_signature(None).is_err() {
            return Err(upstream("its certificate file must end with the self-signed root"));
        }
        drop(parsed);
        // The root is published in the SPIFFE bundle as a JWK.
        anchor_jwk(chain.last().map(Vec::as_slice).unwrap_or_default(), None)?;
        Ok(Upstream { key, chain })
    }

    /// When the upstream CA's certificate expires: the intermediate never outlives it.
    pub fn not_after(&self) -> Result<UnixMillis, X509Error> {
        not_after(&self.chain[0])
    }

    /// The upstream CA's own certificate: the issuer of the trust domain's CA.
    pub fn certificate(&self) -> &[u8] {
        &self.chain[0]
    }

    /// The root: the trust anchor relying parties are given.
    pub fn root(&self) -> &[u8] {
        self.chain.last().map(Vec::as_slice).unwrap_or_default()
    }
}

/// A new CA certificate for `trust_domain_id` signed by `upstream`, valid from now for
/// `ttl_secs` but never past the upstream CA's `notAfter`. Returns the chain from it to the
/// root: the new certificate, the upstream chain, the root last.
pub fn intermediate_ca(
    key: &SigningKey,
    trust_domain_id: &str,
    upstream_ca: &Upstream,
    now: UnixMillis,
    ttl_secs: u64,
    random: [u8; 16],
) -> Result<Vec<Vec<u8>>, X509Error> {
    let up_until = upstream_ca.not_after()?;
    if up_until.0 <= now.0 {
        return Err(upstream("its certificate has expired"));
    }
    let mut p = ca_params(trust_domain_id, now, UnixMillis(now.plus_secs(ttl_secs).0.min(up_until.0)), random)?;
    p.use_authority_key_identifier_extension = true;
    let issuer =
        Issuer::from_ca_cert_der(&upstream_ca.chain[0].as_slice().into(), &upstream_ca.key).map_err(generate)?;
    let cert = p.signed_by(&rcgen_key(key)?, &issuer).map_err(generate)?;
    let mut chain = vec![cert.der().to_vec()];
    chain.extend(upstream_ca.chain.iter().cloned());
    Ok(chain)
}

/// A trust anchor as a SPIFFE bundle JWK (`use: x509-svid`, the certificate in `x5c`), its
/// key parameters read from the certificate: EC (P-256, P-384, P-521) or RSA. The `kid` is
/// `kid`, else the first 16 bytes of the certificate's SHA-256, hex.
pub fn anchor_jwk(der: &[u8], kid: Option<&str>) -> Result<serde_json::Value, X509Error> {
    use base64::Engine;
    use x509_parser::public_key::PublicKey;
    let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let cert = parse(der)?;
    let spki = cert.public_key();
    let mut jwk = match spki.parsed().map_err(|e| X509Error::Malformed(e.to_string()))? {
        PublicKey::EC(point) => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            let (crv, n) = match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => ("P-256", 32),
                Some("1.3.132.0.34") => ("P-384", 48),
                Some("1.3.132.0.35") => ("P-521", 66),
                _ => return Err(X509Error::Malformed("an EC key on an unsupported curve".into())),
            };
            let d = point.data();
            if d.len() != 1 + 2 * n || d[0] != 4 {
                return Err(X509Error::Malformed("an EC point that is not uncompressed".into()));
            }
            serde_json::json!({"kty": "EC", "crv": crv, "x": b64u(&d[1..1 + n]), "y": b64u(&d[1 + n..])})
        }
        PublicKey::RSA(rsa) => {
            let strip = |b: &[u8]| b.iter().position(|&x| x != 0).map(|i| b[i..].to_vec()).unwrap_or_default();
            serde_json::json!({"kty": "RSA", "n": b64u(&strip(rsa.modulus)), "e": b64u(&strip(rsa.exponent))})
        }
        _ => return Err(X509Error::Malformed("a trust anchor key that is neither EC nor RSA".into())),
    };
    jwk["kid"] = match kid {
        Some(k) => k.into(),
        None => hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref()[..16]).into(),
    };
    jwk["use"] = "x509-svid".into();
    jwk["x5c"] = serde_json::json!([base64::engine::general_purpose::STANDARD.encode(der)]);
    Ok(jwk)
}

/// An issued X.509-SVID: its certificate chain (leaf first, then the CA's chain) and its
/// private key (PKCS#8 DER, handed to the workload and never stored).
pub struct Leaf {
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
    pub not_after: UnixMillis,
    pub serial_hex: String,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Leaf(serial {}, until {})", self.serial_hex, self.not_after.0)
    }
}

/// The CA that signs leaves: its key and its certificate chain (its own certificate first).
pub struct Ca<'a> {
    pub key: &'a SigningKey,
    pub chain: &'a [Vec<u8>],
}

/// Issues a leaf X.509-SVID for `spiffe_id` with a fresh P-256 key, valid from now for
/// `ttl_secs` but never past its CA certificate's `notAfter`.
pub fn issue_leaf(
    ca: &Ca<'_>,
    spiffe_id: &str,
    now: UnixMillis,
    ttl_secs: u64,
    random: [u8; 16],
) -> Result<Leaf, X509Error> {
    let ca_der = ca.chain.first().ok_or(X509Error::Malformed("the CA has no certificate".into()))?;
    let ca_not_after = not_after(ca_der)?;
    let leaf_key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(generate)?;
    let pkcs8 = leaf_key.to_pkcs8v1().map_err(generate)?.as_ref().to_vec();
    let leaf_kp =
        KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), &PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let until = UnixMillis(now.plus_secs(ttl_secs).0.min(ca_not_after.0));
    let serial = serial(random);
    let mut p = CertificateParams::default();
    p.distinguished_name = name("Remit", "X.509-SVID");
    p.subject_alt_names = vec![uri(spiffe_id)?];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.serial_number = Some(serial.clone());
    p.use_authority_key_identifier_extension = true;
    p.not_before = datetime(UnixMillis(now.0.saturating_sub(BACKDATE_MS)))?;
    p.not_after = datetime(until)?;
    let ca_kp = rcgen_key(ca.key)?;
    let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), ca_kp).map_err(generate)?;
    let cert = p.signed_by(&leaf_kp, &issuer).map_err(generate)?;
    let mut chain = vec![cert.der().to_vec()];
    chain.extend(ca.chain.iter().cloned());
    Ok(Leaf { chain, key_pkcs8: pkcs8, not_after: until, serial_hex: hex::encode(serial.to_bytes()) })
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, X509Error> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| X509Error::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(X509Error::Malformed("trailing bytes after the certificate".into()));
    }
    Ok(cert)
}

/// A certificate's public key as an uncompressed P-256 point (what [`SigningKey`] holds),
/// or the SPKI's raw key bits for another kind of key.
pub fn public_key_of(der: &[u8]) -> Result<Vec<u8>, X509Error> {
    Ok(parse(der)?.public_key().subject_public_key.data.to_vec())
}

/// A certificate's `notAfter`.
pub fn not_after(der: &[u8]) -> Result<UnixMillis, X509Error> {
    Ok(validity(der)?.1)
}

/// A certificate's serial number (hex of its bytes, as issued): what names one certificate —
/// its DER is not unique, since an ECDSA signature has two valid encodings.
pub fn serial_hex(der: &[u8]) -> Result<String, X509Error> {
    Ok(hex::encode(parse(der)?.raw_serial()))
}

/// A certificate's `notBefore` and `notAfter`.
pub fn validity(der: &[u8]) -> Result<(UnixMillis, UnixMillis), X509Error> {
    let v = parse(der)?.validity().clone();
    let ms = |t: i64| UnixMillis(t.saturating_mul(1000));
    Ok((ms(v.not_before.timestamp()), ms(v.not_after.timestamp())))
}

/// Splits concatenated DER certificates (a bundle or chain as the Workload API carries them).
pub fn split_concatenated(mut der: &[u8]) -> Result<Vec<Vec<u8>>, X509Error> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = X509Certificate::from_der(der).map_err(|e| X509Error::Malformed(e.to_string()))?;
        let len = der.len() - rest.len();
        out.push(der[..len].to_vec());
        der = rest;
    }
    Ok(out)
}

/// Checks a leaf certificate against the X509-SVID rules a validator must apply (exactly one
/// URI SAN, a `spiffe://` ID with a path, `cA=false`, no `keyCertSign`/`cRLSign`) and
/// returns its SPIFFE ID. Chain and signature checks are the caller's (rustls/webpki).
pub fn check_svid(der: &[u8]) -> Result<String, X509Error> {
    let cert = parse(der)?;
    let mut uris = Vec::new();
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(X509Error::NotSvid("it is a CA certificate")),
            ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                return Err(X509Error::NotSvid("its key usage allows signing certificates"));
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    if let GeneralName::URI(u) = n {
                        uris.push((*u).to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    let [id] = uris.as_slice() else { return Err(X509Error::NotSvid("it must carry exactly one URI SAN")) };
    let parsed =
        remit_core::ids::SpiffeId::parse(id).map_err(|_| X509Error::NotSvid("its URI SAN is not a SPIFFE ID"))?;
    if parsed.path().is_empty() {
        return Err(X509Error::NotSvid("its SPIFFE ID has no path"));
    }
    Ok(id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_follow_the_x509_svid_rules() {
        let ca_key = SigningKey::generate().unwrap();
        let now = UnixMillis(1_800_000_000_000);
        let ca = self_signed_ca(&ca_key, "spiffe://example.org", now, 86_400, [7; 16]).unwrap();
        let chain = vec![ca.clone()];
        let leaf = issue_leaf(
            &Ca { key: &ca_key, chain: &chain },
            "spiffe://example.org/agent/a/instance/i-1",
            now,
            3600,
            [9; 16],
        )
        .unwrap();
        assert_eq!(leaf.chain.len(), 2);
        assert_eq!(check_svid(&leaf.chain[0]).unwrap(), "spiffe://example.org/agent/a/instance/i-1");
        assert_eq!(leaf.not_after, now.plus_secs(3600));
        // The CA itself is refused as an SVID.
        assert!(matches!(check_svid(&ca), Err(X509Error::NotSvid(_))));
        assert_eq!(serial_hex(&leaf.chain[0]).unwrap(), leaf.serial_hex);
        // A leaf never outlives its CA.
        let short =
            issue_leaf(&Ca { key: &ca_key, chain: &chain }, "spiffe://example.org/x", now, 10 * 86_400, [1; 16])
                .unwrap();
        assert_eq!(short.not_after, now.plus_secs(86_400));
        let both = [leaf.chain[0].clone(), ca].concat();
        assert_eq!(split_concatenated(&both).unwrap().len(), 2);
        assert!(split_concatenated(&both[..both.len() - 1]).is_err());
    }
}
