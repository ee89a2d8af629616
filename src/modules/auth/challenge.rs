//! The nonces we hand out: the secret that signs them ([`secret`]), how long they are good
//! for, and the 401/407 challenge that carries one (with `stale=true` after a stale nonce).
//!
//! The nonce and digest arithmetic itself is sans-IO in [`crate::modules::digest`]; checking
//! a nonce that comes back is [`super::authorize`]'s.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use super::credentials::{find_credentials, Found};
use super::{AuthKind, AuthSettings};
use crate::modules::ctx::MsgCtx;
use crate::modules::digest::{self, NonceCheck};
use crate::modules::Params;

/// `nonce_expire` when unset: seconds a nonce is good for.
pub const DEFAULT_NONCE_EXPIRE: i64 = 300;

static RANDOM_SECRET: OnceLock<String> = OnceLock::new();

/// The nonce secret: `modparam("auth", "secret")`, else one made at start (a notice says
/// so: nonces then neither survive a restart nor verify at a peer).
pub fn secret(params: &Params) -> &str {
    if let Some(s) = params.str("auth", "secret").filter(|s| !s.is_empty()) {
        return s;
    }
    RANDOM_SECRET.get_or_init(|| {
        crate::notice!(
            "auth: no secret set (modparam(\"auth\", \"secret\", ...)); using a random one: \
             nonces will not verify at another server or after a restart"
        );
        format!("{:032x}", rand::random::<u128>())
    })
}

pub(super) fn nonce_expire(params: &Params) -> u64 {
    params
        .int("auth", "nonce_expire")
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_NONCE_EXPIRE)
        .unsigned_abs()
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl MsgCtx<'_, '_> {
    pub(super) fn challenge(
        &mut self,
        st: &AuthSettings,
        kind: AuthKind,
        realm: &str,
        qop: bool,
    ) -> i32 {
        let realm = self.auth_realm(realm);
        let now = unix_now();
        let secret = st.secret.as_str();
        let stale = match find_credentials(self.msg, kind, &realm) {
            Found::Creds(c) => c
                .nonce
                .is_some_and(|n| digest::check_nonce(n, secret, now) == NonceCheck::Stale),
            _ => false,
        };
        let nonce = digest::make_nonce(now + st.nonce_expire, rand::random::<u32>(), secret);
        let value = digest::challenge_value(&realm, &nonce, qop, stale);
        let (code, reason, hdr): (u16, &[u8], &str) = match kind {
            AuthKind::Www => (401, b"Unauthorized", "WWW-Authenticate"),
            AuthKind::Proxy => (407, b"Proxy Authentication Required", "Proxy-Authenticate"),
        };
        self.sl_reply_with_headers(code, reason, &format!("{hdr}: {value}\r\n"))
    }
}
