//! Refused API calls on their way to the audit trail, coalesced so that a flood of bad tokens
//! cannot grow the audit file without bound.
//!
//! A refusal (401 or 403) is keyed by its route, the role or "unauthenticated", the reason
//! and the caller's IP address. The first refusal of a key is written at once, as one event
//! naming all four (the address is the ATNA NetworkAccessPointID). Further refusals of that
//! key within [`WINDOW`] are only counted; when the window closes, one summary event states
//! the count and the first and last time. At most [`MAX_KEYS`] keys are followed per window;
//! refusals of further addresses are counted under their route, role and reason with the
//! address `*`. Routes, roles and reasons are the node's own fixed strings, so the number of
//! lines a flood can cause per window is bounded whatever the callers send: at most two per
//! key, `2 × (MAX_KEYS + routes × roles × reasons)`.
//!
//! The counts of a window still open are held in memory: a crash loses at most the last
//! [`WINDOW`] of counts, never a key's first event.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditKind, AuditOutcome, ParticipantObject};

/// How long refusals of one key are counted before their summary is written.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Keys with their own address followed at once; refusals from more addresses are counted
/// under the address `*`.
pub const MAX_KEYS: usize = 256;

/// What was refused: the route (its template, e.g. `/v1/jobs/{id}`), who asked (a role, or
/// `unauthenticated`) and why. Only the node's own strings: nothing a caller sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Denial {
    pub route: &'static str,
    pub who: &'static str,
    pub why: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    denial: Denial,
    /// `None` once [`MAX_KEYS`] addresses are followed.
    source: Option<IpAddr>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    opened: SystemTime,
    /// Refusals after the first (the first was written when the window opened).
    more: u64,
    first_more: SystemTime,
    last: SystemTime,
}

/// The refusals of the windows still open.
#[derive(Debug, Default)]
pub struct Coalescer {
    open: HashMap<Key, Window>,
    /// Keys with an address (not `*`) among `open`.
    addressed: usize,
}

impl Coalescer {
    /// Counts one refusal at `now`; returns the event to write at once if it opens a window.
    pub fn observe(
        &mut self,
        denial: Denial,
        source: IpAddr,
        now: SystemTime,
    ) -> Option<AuditEvent> {
        let mut key = Key {
            denial,
            source: Some(source),
        };
        if !self.open.contains_key(&key) && self.addressed >= MAX_KEYS {
            key.source = None;
        }
        if let Some(w) = self.open.get_mut(&key) {
            if w.more == 0 {
                w.first_more = now;
            }
            w.more += 1;
            w.last = w.last.max(now);
            return None;
        }
        if key.source.is_some() {
            self.addressed += 1;
        }
        self.open.insert(
            key,
            Window {
                opened: now,
                more: 0,
                first_more: now,
                last: now,
            },
        );
        Some(first_event(key, now))
    }

    /// Closes the windows older than [`WINDOW`] at `now`: one summary event for each that
    /// counted further refusals.
    pub fn due(&mut self, now: SystemTime) -> Vec<AuditEvent> {
        self.close(|w| now.duration_since(w.opened).unwrap_or_default() >= WINDOW)
    }

    /// Closes every window (the node is stopping).
    pub fn drain(&mut self) -> Vec<AuditEvent> {
        self.close(|_| true)
    }

    fn close(&mut self, done: impl Fn(&Window) -> bool) -> Vec<AuditEvent> {
        let mut closed: Vec<(Key, Window)> = Vec::new();
        self.open.retain(|k, w| {
            if done(w) {
                closed.push((*k, *w));
                false
            } else {
                true
            }
        });
        self.addressed -= closed.iter().filter(|(k, _)| k.source.is_some()).count();
        // Oldest first, so the file reads in time order.
        closed.sort_by_key(|(_, w)| w.last);
        closed
            .into_iter()
            .filter(|(_, w)| w.more > 0)
            .map(|(k, w)| summary_event(k, &w))
            .collect()
    }

    /// Windows open (for tests and metrics).
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

fn source_text(key: Key) -> String {
    key.source
        .map_or_else(|| "*".to_owned(), |ip| ip.to_string())
}

fn event(
    key: Key,
    description: String,
    at: SystemTime,
    objects: Vec<ParticipantObject>,
) -> AuditEvent {
    let mut e = AuditEvent::new(
        AuditKind::Refusal,
        AuditOutcome::MinorFailure,
        description,
        ("api-client", key.denial.who),
        objects,
    );
    e.date_time = rfc3339(at);
    if let Some(p) = e.participants.first_mut() {
        p.network_access_point_id = Some(source_text(key));
    }
    e
}

fn route_object(key: Key, detail: Option<String>) -> ParticipantObject {
    ParticipantObject {
        id_type_code: "api-route".into(),
        id: key.denial.route.to_owned(),
        detail,
    }
}

fn first_event(key: Key, at: SystemTime) -> AuditEvent {
    let Denial { route, why, .. } = key.denial;
    event(
        key,
        format!("API call to {route} refused: {why}"),
        at,
        vec![route_object(key, None)],
    )
}

fn summary_event(key: Key, w: &Window) -> AuditEvent {
    let Denial { route, why, .. } = key.denial;
    let (n, first, last) = (w.more, rfc3339(w.first_more), rfc3339(w.last));
    event(
        key,
        format!(
            "{n} more API calls to {route} refused: {why} (from {}, between {first} and {last})",
            source_text(key)
        ),
        w.last,
        vec![route_object(
            key,
            Some(format!("count={n} first={first} last={last}")),
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Denial = Denial {
        route: "/metrics",
        who: "unauthenticated",
        why: "missing or unknown bearer token",
    };

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_flood_from_one_address_is_one_event_then_one_count() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut c = Coalescer::default();
        let first = c
            .observe(D, ip(1), t0)
            .expect("the first refusal is written at once");
        assert_eq!(
            first.outcome_description,
            "API call to /metrics refused: missing or unknown bearer token"
        );
        assert_eq!(
            first.participants[0].network_access_point_id.as_deref(),
            Some("10.0.0.1")
        );
        for i in 1..100_000u64 {
            assert!(c
                .observe(D, ip(1), t0 + Duration::from_micros(i * 500))
                .is_none());
        }
        assert!(
            c.due(t0 + WINDOW - Duration::from_secs(1)).is_empty(),
            "window still open"
        );
        let out = c.due(t0 + WINDOW);
        assert_eq!(out.len(), 1);
        let s = &out[0];
        assert!(
            s.outcome_description
                .starts_with("99999 more API calls to /metrics refused"),
            "{}",
            s.outcome_description
        );
        let detail = s.objects[0].detail.as_deref().unwrap();
        assert!(
            detail.starts_with("count=99999 first=2027-01-15T08:00:00.0005Z last="),
            "{detail}"
        );
        assert_eq!(s.objects[0].id, "/metrics");
        assert_eq!(c.open_windows(), 0);
        // The next refusal opens a new window and is written again.
        assert!(c.observe(D, ip(1), t0 + WINDOW * 2).is_some());
    }

    #[test]
    fn a_lone_refusal_has_no_summary_and_every_key_is_its_own() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut c = Coalescer::default();
        assert!(c.observe(D, ip(1), t0).is_some());
        assert!(c.observe(D, ip(2), t0).is_some(), "another address");
        let forbidden = Denial {
            who: "publisher",
            why: "role not allowed on this route",
            ..D
        };
        assert!(c.observe(forbidden, ip(1), t0).is_some(), "another role");
        assert!(c.due(t0 + WINDOW).is_empty(), "nothing more was refused");
    }

    #[test]
    fn many_addresses_are_capped_and_counted_under_a_star() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut c = Coalescer::default();
        let mut written = 0;
        for n in 0..10_000 {
            written += usize::from(c.observe(D, ip(n), t0).is_some());
        }
        // MAX_KEYS addresses, then one `*` key.
        assert_eq!(written, MAX_KEYS + 1);
        assert_eq!(c.open_windows(), MAX_KEYS + 1);
        let out = c.drain();
        assert_eq!(out.len(), 1, "only the `*` key counted more than one");
        assert!(
            out[0].outcome_description.contains("from *"),
            "{}",
            out[0].outcome_description
        );
        assert!(out[0].objects[0]
            .detail
            .as_deref()
            .unwrap()
            .starts_with(&format!("count={} ", 10_000 - MAX_KEYS - 1)));
        // Closed windows free their places.
        assert!(c.observe(D, ip(20_000), t0).is_some());
        assert_eq!(c.open_windows(), 1);
    }
}
