//! Signing and verification keys: PKCS#8 PEM in, JWKs out, kid by thumbprint.
//!
//! Only asymmetric algorithms are ever accepted, and a key's algorithm comes
//! from the key, never from a token's header: that rules out `alg: none` and
//! HS256 signed with a public key.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

/// A key file or JWK that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// The private key user-service signs tokens with.
pub struct SigningKey {
    algorithm: Algorithm,
    encoding: EncodingKey,
    public: Jwk,
}

impl std::fmt::Debug for SigningKey {
    // Never print the key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An Ed25519 (EdDSA) or P-256 (ES256) private key in PKCS#8 PEM.
    ///
    /// # Errors
    /// When the PEM holds neither.
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let (algorithm, encoding) = if let Some(der) = ed25519_v1_der(pem) {
            (Algorithm::EdDSA, EncodingKey::from_ed_der(&der))
        } else if let Ok(key) = EncodingKey::from_ec_pem(pem) {
            (Algorithm::ES256, key)
        } else {
            return Err(KeyError(
                "not an Ed25519 or P-256 private key in PKCS#8 PEM".to_owned(),
            ));
        };
        let public = Jwk::from_encoding_key(&encoding, algorithm)
            .map_err(|e| KeyError(format!("cannot derive the public key: {e}")))?;
        Ok(Self {
            algorithm,
            encoding,
            public: published(public)?,
        })
    }

    /// A fresh Ed25519 key and its PKCS#8 PEM (to be stored by the caller).
    ///
    /// # Errors
    /// When the system's random source fails.
    pub fn generate() -> Result<(Self, String), KeyError> {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes, spki::der::pem::LineEnding};
        let mut secret_key = [0u8; 32];
        getrandom::fill(&mut secret_key).map_err(|e| KeyError(format!("no randomness: {e}")))?;
        let pem = KeypairBytes {
            secret_key,
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError(format!("cannot encode the key: {e}")))?;
        let key = Self::from_pkcs8_pem(pem.as_bytes())?;
        Ok((key, pem.to_string()))
    }

    pub fn kid(&self) -> &str {
        self.public.common.key_id.as_deref().unwrap_or_default()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public half, as published in the JWKS.
    pub fn public_jwk(&self) -> &Jwk {
        &self.public
    }

    /// A compact JWS of `claims` with this key's `alg` and `kid`.
    ///
    /// # Errors
    /// When the claims do not serialize (a bug).
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid().to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyError(format!("cannot sign: {e}")))
    }
}

/// An Ed25519 private key as PKCS#8 v1 DER (RFC 8410, what `openssl genpkey`
/// writes and what jsonwebtoken expects), also when the PEM is v2 (with the
/// public key inside, as some tools write it).
fn ed25519_v1_der(pem: &[u8]) -> Option<Vec<u8>> {
    use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
    let keypair = KeypairBytes::from_pkcs8_pem(std::str::from_utf8(pem).ok()?).ok()?;
    let v1 = KeypairBytes {
        secret_key: keypair.secret_key,
        public_key: None,
    };
    Some(v1.to_pkcs8_der().ok()?.as_bytes().to_vec())
}

/// The public JWK of a key file kept for rotation: a public key (SPKI PEM) or the
/// old private key itself (PKCS#8 PEM), Ed25519 or P-256.
///
/// # Errors
/// When the PEM holds no such key.
pub fn public_jwk_from_pem(pem: &[u8]) -> Result<Jwk, KeyError> {
    if let Ok(private) = SigningKey::from_pkcs8_pem(pem) {
        return Ok(private.public);
    }
    let public = if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        Jwk::from_decoding_key(&key, Some(Algorithm::EdDSA))
    } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        Jwk::from_decoding_key(&key, Some(Algorithm::ES256))
    } else {
        return Err(KeyError(
            "not an Ed25519 or P-256 key in PEM (public SPKI or private PKCS#8)".to_owned(),
        ));
    };
    published(public.map_err(|e| KeyError(e.to_string()))?)
}

/// Sets `kid` (the RFC 7638 thumbprint, so the same key always has the same id)
/// and `use: sig`.
fn published(mut jwk: Jwk) -> Result<Jwk, KeyError> {
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| KeyError(format!("cannot compute the key id: {e}")))?;
    jwk.common.key_id = Some(kid);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(jwk)
}

/// The keys tokens may be signed with, by `kid`, each with the one algorithm it
/// verifies.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

#[derive(Clone)]
struct VerifyingKey {
    kid: String,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl KeySet {
    /// The usable keys of a JWKS: asymmetric signing keys with a `kid`; others
    /// (HMAC secrets, encryption keys, unknown curves) are skipped.
    pub fn from_jwks(jwks: &JwkSet) -> Self {
        let keys = jwks
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                    return None;
                }
                let algorithm = asymmetric_algorithm(jwk)?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some(VerifyingKey {
                    kid,
                    algorithm,
                    key,
                })
            })
            .collect();
        Self { keys }
    }

    /// The key with this `kid` and the algorithm pinned to it.
    pub fn find(&self, kid: &str) -> Option<(&DecodingKey, Algorithm)> {
        self.keys
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| (&k.key, k.algorithm))
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The algorithm a JWK verifies: its `alg` when it names an asymmetric one that
/// fits the key type, else the one its type and curve imply. Never HMAC.
fn asymmetric_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        _ => return None,
    };
    let declared = match jwk.common.key_algorithm {
        None => return Some(implied),
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::ES384) => Algorithm::ES384,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::RS384) => Algorithm::RS384,
        Some(KeyAlgorithm::RS512) => Algorithm::RS512,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::PS384) => Algorithm::PS384,
        Some(KeyAlgorithm::PS512) => Algorithm::PS512,
        Some(_) => return None,
    };
    let same_family = matches!(
        (implied, declared),
        (
            Algorithm::RS256,
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512
        ) | (
            Algorithm::RS256,
            Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512
        )
    ) || implied == declared;
    same_family.then_some(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_round_trips_through_its_pem_with_the_same_kid() {
        let (key, pem) = SigningKey::generate().unwrap();
        assert_eq!(key.algorithm(), Algorithm::EdDSA);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = SigningKey::from_pkcs8_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.kid().len(), 43, "base64url SHA-256 thumbprint");
        assert_eq!(
            public_jwk_from_pem(pem.as_bytes()).unwrap(),
            *key.public_jwk()
        );
    }

    #[test]
    fn the_published_jwk_has_no_private_part_and_verifies_what_the_key_signs() {
        let (key, _) = SigningKey::generate().unwrap();
        let json = serde_json::to_value(key.public_jwk()).unwrap();
        assert_eq!(json["kty"], "OKP");
        assert_eq!(json["crv"], "Ed25519");
        assert_eq!(json["use"], "sig");
        assert!(json.get("d").is_none(), "{json}");
        let set = KeySet::from_jwks(&JwkSet {
            keys: vec![key.public_jwk().clone()],
        });
        let (decoding, algorithm) = set.find(key.kid()).unwrap();
        assert_eq!(algorithm, Algorithm::EdDSA);
        let token = key
            .sign(&serde_json::json!({"sub": "1", "exp": 4_000_000_000u64}))
            .unwrap();
        let mut validation = jsonwebtoken::Validation::new(algorithm);
        validation.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(&token, decoding, &validation).unwrap();
    }

    #[test]
    fn hmac_keys_and_keys_without_kid_are_never_used() {
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0", "alg": "HS256"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        ]}))
        .unwrap();
        assert!(KeySet::from_jwks(&jwks).is_empty());
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(SigningKey::from_pkcs8_pem(b"not a key").is_err());
        assert!(
            public_jwk_from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
    }
}
