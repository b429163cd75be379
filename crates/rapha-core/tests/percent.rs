use rapha_core::percent::{decode, PercentError};

#[test]
fn escapes_and_plus_decode_as_in_a_form() {
    assert_eq!(decode("a%2Fb%2fc+d").unwrap(), "a/b/c d");
    assert_eq!(decode("CT%2CMR").unwrap(), "CT,MR");
    assert_eq!(decode("%2B").unwrap(), "+");
    assert_eq!(decode("%C3%A9").unwrap(), "\u{e9}");
    assert_eq!(decode("").unwrap(), "");
}

#[test]
fn a_sign_inside_an_escape_is_refused_not_read_as_hex() {
    // `u8::from_str_radix("+f", 16)` is Ok(15): a decoder built on it reads `%+f` as 0x0f.
    assert_eq!(decode("%+f"), Err(PercentError::BadEscape(0)));
    assert_eq!(decode("A%-1"), Err(PercentError::BadEscape(1)));
}

#[test]
fn escapes_that_are_not_two_hex_digits_are_refused() {
    assert_eq!(decode("%zz"), Err(PercentError::BadEscape(0)));
    assert_eq!(decode("ab%2"), Err(PercentError::BadEscape(2)));
    assert_eq!(decode("%"), Err(PercentError::BadEscape(0)));
    assert_eq!(decode("%41%"), Err(PercentError::BadEscape(3)));
}

#[test]
fn bytes_that_are_not_utf8_are_refused() {
    assert_eq!(decode("%ff"), Err(PercentError::NotUtf8));
    assert_eq!(decode("%C3"), Err(PercentError::NotUtf8));
}
