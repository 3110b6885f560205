//! Snowflake login: password, or key-pair authentication with a JWT.
//!
//! Key-pair (Snowflake's "SNOWFLAKE_JWT" authenticator): the client signs a JWT with its RSA
//! key — `iss` = `ACCOUNT.USER.SHA256:<fingerprint>`, `sub` = `ACCOUNT.USER`, `iat`, `exp`
//! (at most an hour later) — where the fingerprint is the base64 SHA-256 of the public key's
//! DER (`SubjectPublicKeyInfo`), as `openssl rsa -pubout -outform DER | openssl dgst -sha256
//! -binary | base64` prints it and `DESC USER` shows it as `RSA_PUBLIC_KEY_FP`. RS256
//! signatures (PKCS#1 v1.5) are deterministic, so the token is checked byte for byte against
//! the one PyJWT (the Snowflake Python connector's JWT library) makes from the same key.
//!
//! The key is parsed and signed with aws-lc-rs, the crypto library already in the binary
//! for rustls; a JWT is three base64url parts, small enough to write here.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde::Serialize;
use serde_json::{json, Value};

/// How long a JWT is valid (Snowflake accepts at most an hour).
pub const JWT_LIFETIME_SECS: u64 = 59 * 60;

/// A parsed RSA key for key-pair authentication.
pub struct RsaKey {
    pair: KeyPair,
    fingerprint: String,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaKey(SHA256:{})", self.fingerprint)
    }
}

impl RsaKey {
    /// Parse PEM text (`BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY`); errors never quote it.
    pub fn from_pem(pem: &str) -> Result<RsaKey, String> {
        if pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err(
                "option `private_key`: the key is encrypted; give an unencrypted PKCS#8 key \
                        (openssl pkcs8 -topk8 -nocrypt)"
                    .into(),
            );
        }
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|err| format!("option `private_key`: not a PEM private key ({err:?})"))?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(key) => KeyPair::from_pkcs8(key.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(key) => KeyPair::from_der(key.secret_pkcs1_der()),
            _ => return Err("option `private_key`: not an RSA key".into()),
        }
        .map_err(|err| format!("option `private_key`: not a usable RSA key: {err}"))?;
        let public = pair
            .public_key()
            .as_der()
            .map_err(|_| "option `private_key`: cannot encode its public key".to_string())?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public.as_ref());
        Ok(RsaKey {
            pair,
            fingerprint: STANDARD.encode(digest.as_ref()),
        })
    }

    /// `SHA256:<base64>`, as Snowflake shows the registered key.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", self.fingerprint)
    }

    /// The login JWT for `account` (see [`super::config::SnowflakeTarget::account_name`]) and
    /// `user`, issued at `now` (Unix seconds).
    pub fn jwt(&self, account: &str, user: &str, now: u64) -> Result<String, String> {
        let subject = format!("{account}.{}", user.to_ascii_uppercase());
        let claims = Claims {
            iss: format!("{subject}.{}", self.fingerprint()),
            sub: subject,
            iat: now,
            exp: now + JWT_LIFETIME_SECS,
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &Claims) -> Result<String, String> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let body = serde_json::to_vec(claims).map_err(|err| err.to_string())?;
        let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the login JWT failed".to_string())?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// Claims in the order Snowflake's connectors write them.
#[derive(Serialize)]
struct Claims {
    iss: String,
    sub: String,
    iat: u64,
    exp: u64,
}

/// How the destination logs in.
#[derive(Debug)]
pub enum Login {
    Password(super::super::secrets::Secret),
    KeyPair(RsaKey),
}

impl Login {
    /// The `data` of a `login-request` for `account` / `user` at `now` (Unix seconds).
    pub fn request_data(&self, account: &str, user: &str, now: u64) -> Result<Value, String> {
        let mut data = json!({
            "ACCOUNT_NAME": account,
            "LOGIN_NAME": user,
            "CLIENT_APP_ID": "flagstream",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "SESSION_PARAMETERS": {"TIMEZONE": "UTC"},
        });
        match self {
            Login::Password(password) => data["PASSWORD"] = json!(password.expose()),
            Login::KeyPair(key) => {
                data["AUTHENTICATOR"] = json!("SNOWFLAKE_JWT");
                data["TOKEN"] = json!(key.jwt(account, user, now)?);
            }
        }
        Ok(json!({ "data": data }))
    }
}

#[cfg(test)]
impl RsaKey {
    /// Sign fixed claims (to compare with another implementation's token).
    pub fn jwt_at(&self, iss: &str, sub: &str, iat: u64, exp: u64) -> String {
        let claims = Claims {
            iss: iss.into(),
            sub: sub.into(),
            iat,
            exp,
        };
        self.sign(&claims).unwrap()
    }
}
