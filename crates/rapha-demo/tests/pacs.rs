//! The embedded demo PACS's HTTP request parser, from the sender's side: malformed or
//! oversized requests get a 400 and a closed connection, never a panic or an unbounded read.
//! The fuzz entry point (`fuzz/`, target `pacs_request`) is driven here on stable by proptest
//! over the seed corpus in `fuzz/corpus/pacs_request/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use proptest::prelude::*;
use rapha_demo::pacs::{
    fuzz_requests, read_request, DemoPacs, RequestError, MAX_BODY, MAX_HEADERS, MAX_LINE,
};

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pacs_request");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= 8,
        "the seed corpus in {} is missing",
        dir.display()
    );
    seeds
}

fn parse(bytes: &[u8]) -> Result<Option<rapha_demo::pacs::Request>, RequestError> {
    read_request(&mut std::io::Cursor::new(bytes))
}

#[test]
fn seed_requests_are_answered_as_the_dicomweb_client_expects() {
    assert_eq!(
        fuzz_requests(
            b"GET /dicom-web/studies?AccessionNumber=ACC1&limit=10 HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
        vec![200]
    );
    assert_eq!(
        fuzz_requests(
            b"GET /dicom-web/studies/1.2.3/series HTTP/1.1\r\n\r\n\
              GET /dicom-web/studies/1.2.3/series/1.2.3.4/metadata HTTP/1.1\r\n\r\n\
              GET /dicom-web/studies/9.9/series/9.9.9/metadata HTTP/1.1\r\n\r\n\
              GET /elsewhere HTTP/1.1\r\n\r\n"
        ),
        vec![200, 200, 404, 404],
        "pipelined requests are answered in order"
    );
    // The instance's file is gone: a server error, not a crash.
    assert_eq!(
        fuzz_requests(
            b"GET /dicom-web/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5 HTTP/1.1\r\n\r\n"
        ),
        vec![500]
    );
    let r = parse(b"GET /dicom-web/studies?StudyDate=20190101-20201231&ModalitiesInStudy=CT&StudyInstanceUID=1.2.3%2C9.9 HTTP/1.1\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/dicom-web/studies");
    assert_eq!(
        r.query,
        vec![
            ("StudyDate".into(), "20190101-20201231".into()),
            ("ModalitiesInStudy".into(), "CT".into()),
            ("StudyInstanceUID".into(), "1.2.3,9.9".into()),
        ]
    );
}

#[test]
fn other_methods_get_405_and_their_body_is_skipped() {
    assert_eq!(
        fuzz_requests(b"POST /dicom-web/studies HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /dicom-web/studies HTTP/1.1\r\n\r\n"),
        vec![405, 200]
    );
}

#[test]
fn overlong_request_line_is_refused_after_max_line_bytes() {
    let mut req = b"GET /dicom-web/studies?x=".to_vec();
    req.resize(MAX_LINE + 10, b'a');
    req.extend_from_slice(b" HTTP/1.1\r\n\r\n");
    assert!(matches!(parse(&req), Err(RequestError::LineTooLong)));
    assert_eq!(fuzz_requests(&req), vec![400]);
}

#[test]
fn header_flood_is_refused() {
    let mut req = b"GET /dicom-web/studies HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&req), Err(RequestError::TooManyHeaders)));
}

#[test]
fn bad_or_huge_content_length_and_chunked_bodies_are_refused() {
    for (req, want) in [
        (
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_owned(),
            "BadContentLength",
        ),
        (
            "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_owned(),
            "BodyTooLarge",
        ),
        (
            format!("GET / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1),
            "BodyTooLarge",
        ),
        (
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_owned(),
            "TransferEncoding",
        ),
        (
            "GET / HTTP/1.1\r\nno colon here\r\n\r\n".to_owned(),
            "BadHeader",
        ),
        ("GET /x\r\n\r\n".to_owned(), "BadRequestLine"),
        ("get / HTTP/1.1\r\n\r\n".to_owned(), "BadRequestLine"),
        (
            "GET http://evil/ HTTP/1.1\r\n\r\n".to_owned(),
            "BadRequestLine",
        ),
    ] {
        let e = parse(req.as_bytes()).unwrap_err();
        assert!(format!("{e:?}").starts_with(want), "{req:?}: {e:?}");
        assert_eq!(fuzz_requests(req.as_bytes()), vec![400], "{req:?}");
    }
}

#[test]
fn truncated_request_ends_the_stream_without_an_answer() {
    assert!(matches!(
        parse(b"GET /dicom-web/studies HTTP/1.1\r\nHost: x"),
        Err(RequestError::Truncated)
    ));
    assert!(matches!(
        parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
        Err(RequestError::Truncated)
    ));
    assert!(parse(b"").unwrap().is_none());
}

#[test]
fn request_targets_are_percent_decoded_as_a_form() {
    let req =
        parse(b"GET /dicom-web/studies/1.2%2E3?AccessionNumber=A%2F1+x&limit=2 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
    assert_eq!(req.path, "/dicom-web/studies/1.2.3");
    assert_eq!(
        req.query,
        [
            ("AccessionNumber".to_owned(), "A/1 x".to_owned()),
            ("limit".to_owned(), "2".to_owned())
        ]
    );
}

#[test]
fn percent_escapes_that_are_not_two_hex_digits_are_refused() {
    for target in [
        "/dicom-web/studies?AccessionNumber=%+f",
        "/dicom-web/studies?AccessionNumber=%zz%2",
        "/dicom-web/studies%2",
        "/dicom-web/studies?Accession%ffNumber=A1",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\n\r\n");
        assert!(
            matches!(
                parse(req.as_bytes()),
                Err(RequestError::BadPercentEncoding(_))
            ),
            "{target}"
        );
    }
    assert_eq!(
        fuzz_requests(b"GET /dicom-web/studies?AccessionNumber=%+f HTTP/1.1\r\n\r\n"),
        [400]
    );
}

#[test]
fn the_running_demo_pacs_answers_a_malformed_request_with_400_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let pacs = DemoPacs::start(dir.path()).unwrap();
    let addr = pacs
        .dicomweb_url()
        .trim_start_matches("http://")
        .trim_end_matches("/dicom-web")
        .to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /dicom-web/studies HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer.contains("HTTP/1.1 400 Bad Request"),
        "the malformed second request is refused: {answer}"
    );
    assert!(
        answer.ends_with("METHOD TARGET HTTP/1.x` in ASCII"),
        "{answer}"
    );
}

/// A seed with some bytes overwritten, some inserted and the tail cut.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus();
    (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        any::<usize>(),
    )
        .prop_map(move |(i, flips, inserts, cut)| {
            let mut b = seeds[i].clone();
            for (at, v) in flips {
                if !b.is_empty() {
                    let n = b.len();
                    b[at % n] = v;
                }
            }
            for (at, v) in inserts {
                let n = b.len() + 1;
                b.insert(at % n, v);
            }
            let n = b.len() + 1;
            b.truncate(cut % n + n / 2);
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutated_seed_requests_never_panic_and_get_a_known_status(bytes in mutated()) {
        let codes = fuzz_requests(&bytes);
        prop_assert!(codes.iter().all(|c| [200, 400, 404, 405, 500].contains(c)), "{codes:?}");
        // A 400 ends the connection: nothing is answered after it.
        if let Some(p) = codes.iter().position(|&c| c == 400) {
            prop_assert_eq!(p, codes.len() - 1);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let codes = fuzz_requests(&bytes);
        prop_assert!(codes.iter().all(|c| [200, 400, 404, 405, 500].contains(c)), "{codes:?}");
    }
}
