//! Percent-decoding of one URL query component (`application/x-www-form-urlencoded`: `+` is
//! a space, `%XX` a byte), the one decoder of the workspace: the scope guard reads hospital
//! and publisher queries with it (**I2**), the demo PACS its requests.
//!
//! Strict where the `percent-encoding` crate is lenient: a `%` must be followed by two ASCII
//! hex digits (`%zz`, a trailing `%2` and `%+f`, which `u8::from_str_radix` would read as
//! `0x0f`, are refused, never kept literally or guessed at), and the decoded bytes must be
//! UTF-8. A query the scope guard could read two ways is refused instead.

use std::borrow::Cow;

/// Why a component is not valid percent-encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PercentError {
    /// A `%` at this byte offset is not followed by two ASCII hex digits.
    #[error("the `%` at byte {0} is not followed by two hex digits")]
    BadEscape(usize),
    /// The decoded bytes are not UTF-8.
    #[error("the decoded bytes are not UTF-8")]
    NotUtf8,
}

/// Decodes one query key or value: `+` to a space, each `%XX` to its byte.
///
/// # Errors
/// [`PercentError`] on a `%` without two hex digits after it or bytes that are not UTF-8.
pub fn decode(s: &str) -> Result<String, PercentError> {
    let b = s.as_bytes();
    if let Some(at) = b.iter().enumerate().find_map(|(i, &c)| {
        let escape = b.get(i + 1..i + 3);
        (c == b'%' && !escape.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))).then_some(i)
    }) {
        return Err(PercentError::BadEscape(at));
    }
    // Every `%` starts a two-hex-digit escape, so no `+` is part of one.
    let spaced: Cow<'_, str> = if s.contains('+') {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| PercentError::NotUtf8)
}
