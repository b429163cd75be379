//! Transfer-syntax negotiation for WADO-RS instance retrieval (PS3.18 §8.7.3.5).
//!
//! An archive stores each instance in the syntax its modality or its migration chose; the node
//! decodes only some of them. A retrieval therefore names, in its `Accept` header, the syntaxes
//! the node would take, most preferred first with falling `q` values:
//!
//! 1. [`Wanted::preferred`]: the lossless syntaxes this build decodes, explicit VR little
//!    endian last among them, then `transfer-syntax=*` (as stored) at the lowest `q`. A PACS
//!    that picks by `q` serves the stored syntax when it is listed and transcodes losslessly
//!    otherwise; one that cannot transcode serves as stored. Lossy syntaxes are never listed:
//!    asking for one would invite a transcoding PACS to compress lossless pixels lossily. A
//!    lossy-stored instance comes as stored, through `*`.
//! 2. [`Wanted::transcoded`]: the same list without `*`, asked only when what came first is in
//!    a syntax the node cannot decode. A PACS that cannot serve any of them answers an error
//!    status, and the record source counts the instance as `transfer-syntax-not-served`.
//!
//! Orthanc's DICOMweb plugin (1.7, Debian bookworm) reads one `transfer-syntax` parameter, the
//! last in the header, and ignores `q`: with the order above it serves as stored on the first
//! request and transcodes to explicit VR little endian on the second, which is what a PACS
//! that honours `q` does for any instance the node cannot decode as stored.

/// Explicit VR Little Endian: the fallback every DICOMweb origin server can serve.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// What a retrieval asks the PACS for, in order of preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    syntaxes: Vec<String>,
    as_stored: bool,
}

impl Wanted {
    /// Whatever the PACS stores (`transfer-syntax=*`), nothing else named.
    #[must_use]
    pub fn as_stored() -> Self {
        Self {
            syntaxes: Vec::new(),
            as_stored: true,
        }
    }

    /// `lossless` in this order, then explicit VR little endian (moved last if listed), then
    /// as stored.
    #[must_use]
    pub fn preferred<'a>(lossless: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            as_stored: true,
            ..Self::transcoded(lossless)
        }
    }

    /// `lossless` in this order, then explicit VR little endian; never as stored.
    #[must_use]
    pub fn transcoded<'a>(lossless: impl IntoIterator<Item = &'a str>) -> Self {
        let mut syntaxes: Vec<String> = Vec::new();
        for ts in lossless {
            if ts != EXPLICIT_VR_LITTLE_ENDIAN && !syntaxes.iter().any(|s| s == ts) {
                syntaxes.push(ts.to_owned());
            }
        }
        syntaxes.push(EXPLICIT_VR_LITTLE_ENDIAN.to_owned());
        Self {
            syntaxes,
            as_stored: false,
        }
    }

    /// Whether an instance served in `ts` is one this request asked for.
    #[must_use]
    pub fn accepts(&self, ts: &str) -> bool {
        self.as_stored || self.syntaxes.iter().any(|s| s == ts)
    }

    /// The `Accept` header value: one media range per syntax, `q` falling from 1 in equal
    /// steps (three decimals, as RFC 9110 allows), `*` last.
    #[must_use]
    pub fn accept_header(&self) -> String {
        let names: Vec<&str> = self
            .syntaxes
            .iter()
            .map(String::as_str)
            .chain(self.as_stored.then_some("*"))
            .collect();
        let step = 900 / names.len().max(1);
        names
            .iter()
            .enumerate()
            .map(|(i, ts)| {
                let q = 1000 - i * step;
                format!(
                    "multipart/related; type=\"application/dicom\"; transfer-syntax={ts}; q={}",
                    qvalue(q)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `q` in thousandths as RFC 9110 writes it: `1`, `0.85`, `0.1`.
fn qvalue(thousandths: usize) -> String {
    if thousandths >= 1000 {
        return "1".into();
    }
    let s = format!("0.{thousandths:03}");
    s.trim_end_matches('0').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const J2K: &str = "1.2.840.10008.1.2.4.90";
    const RLE: &str = "1.2.840.10008.1.2.5";

    #[test]
    fn preferred_lists_lossless_then_explicit_little_endian_then_as_stored() {
        let w = Wanted::preferred([J2K, EXPLICIT_VR_LITTLE_ENDIAN, RLE, J2K]);
        assert_eq!(
            w.accept_header(),
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.90; q=1, \
             multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.5; q=0.775, \
             multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1; q=0.55, \
             multipart/related; type=\"application/dicom\"; transfer-syntax=*; q=0.325"
        );
        assert!(w.accepts("1.2.840.10008.1.2.4.50"));
    }

    #[test]
    fn transcoded_never_asks_for_the_stored_syntax() {
        let w = Wanted::transcoded([J2K]);
        assert!(!w.accept_header().contains("transfer-syntax=*"));
        assert!(w
            .accept_header()
            .ends_with("transfer-syntax=1.2.840.10008.1.2.1; q=0.55"));
        assert!(w.accepts(J2K) && w.accepts(EXPLICIT_VR_LITTLE_ENDIAN));
        assert!(!w.accepts("1.2.840.10008.1.2.4.80"));
        assert_eq!(
            Wanted::transcoded([]).accept_header(),
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1; q=1"
        );
    }

    #[test]
    fn the_node_asks_only_for_lossless_syntaxes_it_decodes() {
        use crate::pixels::{decodes, LOSSLESS_TRANSFER_SYNTAXES};
        for ts in LOSSLESS_TRANSFER_SYNTAXES {
            assert!(decodes(ts), "{ts} is asked for but not decoded");
        }
        // Lossy (baseline and extended JPEG, JPEG 2000, HTJ2K, near-lossless JPEG-LS): a PACS
        // asked for one of these would compress lossless pixels lossily.
        for lossy in [
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.51",
            "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.4.203",
            "1.2.840.10008.1.2.4.81",
        ] {
            assert!(!LOSSLESS_TRANSFER_SYNTAXES.contains(&lossy));
            assert!(!Wanted::preferred(LOSSLESS_TRANSFER_SYNTAXES)
                .accept_header()
                .contains(&format!("={lossy};")));
        }
        assert!(decodes(EXPLICIT_VR_LITTLE_ENDIAN));
        assert!(!decodes("1.2.840.10008.1.2.4.100"), "MPEG-2 video");
    }

    #[test]
    fn q_values_fall_strictly_and_stay_in_range() {
        let many: Vec<String> = (0..40).map(|i| format!("1.2.3.{i}")).collect();
        let w = Wanted::preferred(many.iter().map(String::as_str));
        let qs: Vec<f64> = w
            .accept_header()
            .split(", ")
            .map(|r| r.rsplit("q=").next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(qs.len(), 42);
        assert!(qs.windows(2).all(|p| p[0] > p[1]), "{qs:?}");
        assert!(qs.iter().all(|q| (0.001..=1.0).contains(q)));
        assert_eq!(
            Wanted::as_stored().accept_header(),
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*; q=1"
        );
    }
}
