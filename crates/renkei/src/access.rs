//! Who may use the admin API, and what each may do: roles, API tokens, console passwords.
//!
//! Roles: `viewer` reads history; `editor` also retries, replays and runs connection tests; `admin` does
//! everything, the audit log included. A token is `rk_` and 43 base64url characters (32 random bytes); the
//! store keeps only its SHA-256, so a copy of the database opens nothing. Console passwords are kept as argon2id
//! hashes. `server.admin_token` (or `RENKEI_ADMIN_TOKEN`) is the one token from the config: it is an admin,
//! named `admin_token` in the audit log.
//!
//! A token is shown once, when it is made, and never logged; a password is never shown, logged or stored.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::App;

/// What a caller may do; each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads history, the queue and destinations (never secrets); changes nothing.
    Viewer,
    /// Also retries and replays deliveries and runs connection tests.
    Editor,
    /// Everything, the audit log included.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling the admin API: put on the request by the API's token check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// As the audit log names it: `token:NAME`, or `admin_token` for the config's token.
    pub actor: String,
    pub role: Role,
}

/// The audit log's name for `server.admin_token` / `RENKEI_ADMIN_TOKEN`.
pub const CONFIG_TOKEN_ACTOR: &str = "admin_token";
/// The audit log's name for changes made with the command line.
pub const CLI_ACTOR: &str = "cli";

/// A new random token. Shown once; keep only [`token_hash`] of it.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("rk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256 of a token, hex: how the store finds a token. (A fast hash is enough for 256 random bits; a slow
/// one is for passwords, which people choose.)
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The argon2id hash of a password (PHC string, with a random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` is the one `phc` was made from (constant time, in the argon2 crate).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Passwords shorter than this are refused: a console is reachable from the network.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Token and user names: what the audit log and the CLI show, so no spaces, control characters or `:`
/// (which separates `token:NAME` in the log).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 64 {
        return Err("a name must be 1 to 64 characters".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':') {
        return Err(format!("`{name}`: a name may not contain spaces, control characters or `:`"));
    }
    Ok(())
}

/// Why a caller was turned away.
#[derive(Debug)]
pub enum Denied {
    /// No `Authorization: Bearer`, or a token that is not known (or was revoked).
    Unknown,
    Expired {
        name: String,
        at: DateTime<Utc>,
    },
    /// The store could not be asked.
    Store(renkei_store::StoreError),
}

/// Finds who a bearer token belongs to: the config's admin token (compared in constant time), else a stored
/// token by its hash, which must not have expired at the app's clock.
pub async fn authenticate(app: &App, bearer: Option<&str>) -> Result<Caller, Denied> {
    let Some(token) = bearer.map(str::trim).filter(|t| !t.is_empty()) else { return Err(Denied::Unknown) };
    if let Some(expected) = &app.admin_token {
        if bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())) {
            return Ok(Caller { actor: CONFIG_TOKEN_ACTOR.into(), role: Role::Admin });
        }
    }
    let Some(found) = app.store.find_token(&token_hash(token)).await.map_err(Denied::Store)? else {
        return Err(Denied::Unknown);
    };
    if let Some(at) = found.expires_at.filter(|at| *at <= app.clock.now()) {
        return Err(Denied::Expired { name: found.name, at });
    }
    // A role this version does not know (written by a newer one) opens nothing.
    let role = Role::parse(&found.role).ok_or(Denied::Unknown)?;
    Ok(Caller { actor: format!("token:{}", found.name), role })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("rk_") && a.len() == 46, "{a}");
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn passwords() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse battery!", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_ne!(hash_password("same").unwrap(), hash_password("same").unwrap(), "salted");
    }

    #[test]
    fn roles_and_names() {
        assert!(Role::Admin > Role::Editor && Role::Editor > Role::Viewer);
        assert_eq!(Role::parse("editor"), Some(Role::Editor));
        assert_eq!(Role::parse("root"), None);
        assert!(check_name("ci-bot").is_ok());
        assert!(check_name("佐藤").is_ok());
        for bad in ["", "a b", "token:x", "x\n"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
