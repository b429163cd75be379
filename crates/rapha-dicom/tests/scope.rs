//! I2 from the attacker's side: every broad query shape is refused, by name, before a single
//! byte reaches the PACS; the honest narrow query goes through.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use rapha_dicom::{ClientOptions, DicomWebClient, ScopeLimits, ScopeRule, ScopedQuery};

fn limits() -> ScopeLimits {
    ScopeLimits {
        max_date_range_days: 31,
        max_limit: 500,
        max_list: 3,
        page_size: 10,
    }
}

/// Every broad shape with the rule it must be refused under.
pub const BROAD: &[(&str, ScopeRule)] = &[
    ("", ScopeRule::NarrowingKeyRequired),
    ("limit=10", ScopeRule::NarrowingKeyRequired),
    ("instances?limit=10", ScopeRule::StudyLevelOnly),
    (
        "/instances?SOPClassUID=1.2.840.10008.5.1.4.1.1.2&limit=5",
        ScopeRule::StudyLevelOnly,
    ),
    ("series?Modality=CT&limit=5", ScopeRule::StudyLevelOnly),
    ("studies/1.2.3/instances?limit=5", ScopeRule::StudyLevelOnly),
    ("instances", ScopeRule::StudyLevelOnly),
    ("PatientName=*&limit=10", ScopeRule::AllowedKeys),
    ("PatientID=123&limit=10", ScopeRule::AllowedKeys),
    (
        "includefield=all&StudyInstanceUID=1.2.3&limit=1",
        ScopeRule::AllowedKeys,
    ),
    ("StudyInstanceUID=*&limit=10", ScopeRule::NoWildcards),
    ("AccessionNumber=?*&limit=10", ScopeRule::NoWildcards),
    ("AccessionNumber=A1*&limit=10", ScopeRule::NoWildcards),
    (
        "StudyInstanceUID=1.2.3\\1.2.4&limit=10",
        ScopeRule::NoWildcards,
    ),
    ("StudyInstanceUID=&limit=10", ScopeRule::NoEmptyValue),
    ("AccessionNumber=A1,,A2&limit=10", ScopeRule::NoEmptyValue),
    (
        "AccessionNumber=A1&fuzzymatching=true&limit=10",
        ScopeRule::NoFuzzyMatching,
    ),
    (
        "ModalitiesInStudy=CT&limit=10",
        ScopeRule::NarrowingKeyRequired,
    ),
    (
        "StudyDate=20240101-20240110&limit=10",
        ScopeRule::NarrowingKeyRequired,
    ),
    (
        "StudyDate=20240101-&ModalitiesInStudy=CT&limit=10",
        ScopeRule::DateRangeBounded,
    ),
    (
        "StudyDate=-20240101&ModalitiesInStudy=CT&limit=10",
        ScopeRule::DateRangeBounded,
    ),
    (
        "StudyDate=20240101-20241231&ModalitiesInStudy=CT&limit=10",
        ScopeRule::DateRangeBounded,
    ),
    (
        "StudyDate=20240201-20240101&ModalitiesInStudy=CT&limit=10",
        ScopeRule::DateRangeBounded,
    ),
    (
        "StudyDate=2024-01-01&ModalitiesInStudy=CT&limit=10",
        ScopeRule::ValidValue,
    ),
    (
        "StudyDate=20240230&ModalitiesInStudy=CT&limit=10",
        ScopeRule::ValidValue,
    ),
    ("StudyInstanceUID=1.2.abc&limit=10", ScopeRule::ValidValue),
    (
        "ModalitiesInStudy=ct&StudyDate=20240101&limit=10",
        ScopeRule::ValidValue,
    ),
    ("AccessionNumber=A1", ScopeRule::LimitRequired),
    ("AccessionNumber=A1&limit=0", ScopeRule::LimitRequired),
    ("AccessionNumber=A1&limit=501", ScopeRule::LimitRequired),
    ("AccessionNumber=A1&limit=ten", ScopeRule::LimitRequired),
    ("AccessionNumber=A1,A2,A3,A4&limit=10", ScopeRule::ListSize),
];

#[test]
fn a_percent_escape_that_is_not_two_hex_digits_is_refused() {
    // `%+f` is what `u8::from_str_radix` would have read as 0x0f.
    for q in [
        "AccessionNumber=A%+f&limit=10",
        "AccessionNumber=A1&limit=1%+0",
        "Accession%+fNumber=A1&limit=10",
        "AccessionNumber=A%zz&limit=10",
        "AccessionNumber=A%ff&limit=10",
    ] {
        let err = ScopedQuery::parse(q, &limits()).expect_err(q);
        assert_eq!(err.rule, ScopeRule::ValidValue, "query {q:?}: {err}");
        assert!(
            err.to_string().contains("bad percent-encoding"),
            "{q:?}: {err}"
        );
    }
}

#[test]
fn every_broad_query_shape_is_refused_by_its_rule() {
    for (q, rule) in BROAD {
        let err = ScopedQuery::parse(q, &limits()).expect_err(q);
        assert_eq!(err.rule, *rule, "query {q:?}: {err}");
        assert!(
            err.to_string().contains(rule.name()),
            "refusal names the rule: {err}"
        );
    }
}

#[test]
fn narrow_queries_are_accepted() {
    for q in [
        "StudyInstanceUID=1.2.3&limit=1",
        "studies?StudyInstanceUID=1.2.3,1.2.4&limit=2",
        "AccessionNumber=A1&AccessionNumber=A2&limit=5",
        "StudyDate=20240101-20240131&ModalitiesInStudy=CT&limit=500",
        "StudyDate=20240101&ModalitiesInStudy=CT,MR&limit=5&fuzzymatching=false",
        "StudyDate=20240101-20240131&ModalitiesInStudy=CT%2CMR&limit=5",
    ] {
        let s = ScopedQuery::parse(q, &limits()).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert!(s.limit() >= 1);
    }
    let s = ScopedQuery::parse("studies?StudyInstanceUID=1.2.3,1.2.4&limit=2", &limits()).unwrap();
    assert_eq!(s.study_uids(), ["1.2.3", "1.2.4"]);
}

#[test]
fn cohort_query_goes_through_the_same_guard() {
    let broad = rapha_core::CohortQuery {
        modalities: vec!["CT".into()],
        limit: Some(10),
        ..Default::default()
    };
    let err = ScopedQuery::from_cohort_query(&broad, &limits()).unwrap_err();
    assert_eq!(err.rule, ScopeRule::NarrowingKeyRequired);
    let unlimited = rapha_core::CohortQuery {
        accession_numbers: vec!["A1".into()],
        ..Default::default()
    };
    assert_eq!(
        ScopedQuery::from_cohort_query(&unlimited, &limits())
            .unwrap_err()
            .rule,
        ScopeRule::LimitRequired
    );
    let ok = rapha_core::CohortQuery {
        study_date: Some("20240101-20240115".into()),
        modalities: vec!["CT".into()],
        limit: Some(10),
        ..Default::default()
    };
    assert!(ScopedQuery::from_cohort_query(&ok, &limits()).is_ok());
}

/// Convenience the CLI uses: parse, then search. A refusal must come before any connection.
fn search(client: &DicomWebClient, q: &str) -> rapha_dicom::Result<usize> {
    let scoped = ScopedQuery::parse(q, &limits())?;
    Ok(client.search_studies(&scoped)?.len())
}

#[test]
fn refused_query_sends_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/dicom-web", listener.local_addr().unwrap());
    let client = DicomWebClient::new(ClientOptions::new(url)).unwrap();

    for (q, rule) in BROAD {
        match search(&client, q) {
            Err(rapha_dicom::DicomError::ScopeRefused(r)) => assert_eq!(r.rule, *rule, "{q}"),
            other => panic!("{q:?} was not refused: {other:?}"),
        }
    }
    let mut accepted = 0;
    while listener.accept().is_ok() {
        accepted += 1;
    }
    assert_eq!(
        accepted, 0,
        "a refused query opened a connection to the PACS"
    );

    // Control: the same listener does see the honest query, so the check above can fail.
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok((mut s, _)) = listener.accept() {
                use std::io::{Read, Write};
                s.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]");
                return Some(req);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    });
    let n = search(&client, "AccessionNumber=A1&limit=5").unwrap();
    assert_eq!(n, 0);
    let req = handle
        .join()
        .unwrap()
        .expect("the honest query reached the listener");
    assert!(
        req.starts_with("GET /dicom-web/studies?AccessionNumber=A1&limit=5&offset=0 "),
        "{req}"
    );
}
