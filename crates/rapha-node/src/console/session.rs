//! Console sessions: a token exchanged at login for a random session id held in a cookie, with
//! a CSRF token bound to it, kept server-side until logout or expiry.
//!
//! The session id and the CSRF token are 32 bytes from the OS generator each. The store is
//! keyed by the SHA-256 of the id, so neither a lookup's timing nor a dump of the store gives
//! a usable cookie; the CSRF token is compared in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand_core::RngCore as _;
use rapha_core::Digest;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::api::Role;

/// The session cookie's name.
pub const COOKIE: &str = "rapha_console";

/// Sessions held at once at most: past it, logging in ends the oldest session.
pub const MAX_SESSIONS: usize = 256;

/// One logged-in person: their role, their CSRF token and when the session ends.
#[derive(Clone)]
pub struct Session {
    pub role: Role,
    csrf: Zeroizing<String>,
    created: Instant,
    expires: Instant,
}

impl Session {
    /// The CSRF token every form of this session carries.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The server-side session store.
pub struct Sessions {
    lifetime: Duration,
    open: Mutex<HashMap<Digest, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

fn random_hex() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand_core::OsRng.fill_bytes(&mut bytes[..]);
    Zeroizing::new(hex::encode(&bytes[..]))
}

impl Sessions {
    /// A store whose sessions last `lifetime` from login.
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Opens a session for `role`; returns the id for the cookie (never stored as such).
    pub fn open(&self, role: Role) -> Zeroizing<String> {
        let id = random_hex();
        let now = Instant::now();
        let session = Session {
            role,
            csrf: random_hex(),
            created: now,
            expires: now + self.lifetime,
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k) {
                open.remove(&oldest);
            }
        }
        open.insert(Digest::of(id.as_bytes()), session);
        id
    }

    /// The live session of cookie value `id`, if any (an expired one is removed).
    pub fn get(&self, id: &str) -> Option<Session> {
        let key = Digest::of(id.as_bytes());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                open.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of cookie value `id`; whether there was one.
    pub fn close(&self, id: &str) -> bool {
        let key = Digest::of(id.as_bytes());
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
            .is_some()
    }
}

/// The session cookie's value in a `Cookie` header, if present.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The `Set-Cookie` value that carries a new session: not readable by script, sent only over
/// a secure context and only to this site, to every path of the console.
pub fn set_cookie(id: &str, lifetime: Duration) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        lifetime.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_only_until_it_is_closed_or_expires() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let id = sessions.open(Role::Dpo);
        assert_eq!(id.len(), 64);
        let s = sessions.get(&id).unwrap();
        assert_eq!(s.role, Role::Dpo);
        assert!(s.csrf_matches(s.csrf()));
        assert!(!s.csrf_matches("0"));
        assert!(sessions.get(&id[1..]).is_none());
        assert!(sessions.close(&id));
        assert!(sessions.get(&id).is_none());

        let short = Sessions::new(Duration::ZERO);
        let id = short.open(Role::Admin);
        assert!(short.get(&id).is_none(), "an expired session is not served");
    }

    #[test]
    fn the_store_holds_a_bounded_number_of_sessions_ending_the_oldest() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let first = sessions.open(Role::Admin);
        for _ in 0..MAX_SESSIONS {
            sessions.open(Role::Dpo);
        }
        assert!(sessions.get(&first).is_none());
        assert_eq!(sessions.open.lock().unwrap().len(), MAX_SESSIONS);
    }

    #[test]
    fn the_cookie_is_http_only_secure_strict_and_read_back_among_others() {
        let c = set_cookie("abc", Duration::from_secs(1800));
        assert_eq!(
            c,
            "rapha_console=abc; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=1800"
        );
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "other=1; rapha_console=abc; x=y".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
    }
}
