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
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
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

/// A new self-signed CA certificate for `trust_domain_id` (`spiffe://<td>`), valid from now
/// for `ttl_secs`.
pub fn self_signed_ca(
    key: &SigningKey,
    trust_domain_id: &str,
    now: UnixMillis,
    ttl_secs: u64,
    random: [u8; 16],
) -> Result<Vec<u8>, X509Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = name("Remit", &format!("{trust_domain_id} CA"));
    p.subject_alt_names = vec![uri(trust_domain_id)?];
    // It signs leaves only, never another CA.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(serial(random));
    p.not_before = datetime(UnixMillis(now.0.saturating_sub(BACKDATE_MS)))?;
    p.not_after = datetime(now.plus_secs(ttl_secs))?;
    let kp = rcgen_key(key)?;
    Ok(p.self_signed(&kp).map_err(generate)?.der().to_vec())
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

/// A certificate's `notAfter`.
pub fn not_after(der: &[u8]) -> Result<UnixMillis, X509Error> {
    Ok(validity(der)?.1)
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
