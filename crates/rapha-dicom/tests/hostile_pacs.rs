//! A slow or hostile PACS (issue 18, item 5): a DICOMweb server written for the test
//! (`rapha_testkit::hostile`) that never answers, trickles, sends without end, or ignores
//! `offset`. Each call runs under a watchdog, so a client that hangs fails the test instead of
//! hanging it; with the limits of `[dicom.pacs]` every one ends with a typed error within its
//! bound.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rapha_dicom::cohort::{Cohort, CohortBuilder};
use rapha_dicom::exclusion::OptOuts;
use rapha_dicom::{
    ClientOptions, DicomConfig, DicomError, DicomWebClient, PacsLimits, ScopeLimits, ScopedQuery,
};
use rapha_testkit::hostile::{Behaviour, HostilePacs};

use crate::common::key;

/// Runs `f` on its own thread; fails the test if it has not returned after `secs` seconds.
fn watchdog<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> (T, Duration) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => (v, start.elapsed()),
        Err(_) => {
            panic!("still waiting on the hostile PACS after {secs} s (watchdog): the client hangs")
        }
    }
}

fn config(pacs: PacsLimits) -> DicomConfig {
    DicomConfig {
        scope: ScopeLimits {
            page_size: 5,
            ..ScopeLimits::default()
        },
        pacs,
        ..DicomConfig::default()
    }
}

/// A scoped cohort build against `url`, as the node's cohort step does it.
fn build(url: String, pacs: PacsLimits) -> Result<Cohort, DicomError> {
    let cfg = config(pacs.clone());
    let q = ScopedQuery::parse(
        "StudyDate=20240101-20240131&ModalitiesInStudy=CT&limit=20",
        &cfg.scope,
    )
    .unwrap();
    let client = DicomWebClient::new(ClientOptions::new(url))
        .unwrap()
        .with_limits(pacs);
    let pseudo = key(1);
    let optouts = OptOuts::none();
    CohortBuilder::new(&pseudo, &cfg, &optouts).from_dicomweb(&client, &q)
}

fn quick() -> PacsLimits {
    PacsLimits {
        request_timeout_seconds: 2,
        ..PacsLimits::default()
    }
}

#[test]
fn silent_pacs_ends_the_request_at_its_timeout() {
    let pacs = HostilePacs::start(Behaviour::Silent).unwrap();
    let url = pacs.dicomweb_url();
    let (r, took) = watchdog(30, move || build(url, quick()));
    let e = r.unwrap_err();
    assert!(
        matches!(
            &e,
            DicomError::Timeout {
                what: "QIDO-RS study search",
                seconds: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("within 2 s (dicom.pacs.request_timeout_seconds)"),
        "{e}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[test]
fn trickling_pacs_ends_the_request_at_its_timeout() {
    let pacs = HostilePacs::start(Behaviour::Trickle {
        every: Duration::from_secs(1),
    })
    .unwrap();
    let url = pacs.dicomweb_url();
    let (r, took) = watchdog(30, move || build(url, quick()));
    let e = r.unwrap_err();
    assert!(
        matches!(&e, DicomError::Timeout { seconds: 2, .. }),
        "{e:?}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[test]
fn endless_answer_is_cut_at_the_response_cap() {
    let pacs = HostilePacs::start(Behaviour::EndlessBody {
        content_type: "application/dicom+json".into(),
        rate: 8 << 20,
    })
    .unwrap();
    let url = pacs.dicomweb_url();
    let limits = PacsLimits {
        max_response_bytes: 1 << 20,
        ..PacsLimits::default()
    };
    let (r, took) = watchdog(30, move || build(url, limits));
    let e = r.unwrap_err();
    assert!(
        matches!(
            &e,
            DicomError::ResponseTooLarge {
                limit: 1048576,
                setting: "max_response_bytes",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn endless_instance_is_cut_at_the_instance_cap() {
    let pacs = HostilePacs::start(Behaviour::EndlessBody {
        content_type: "multipart/related; type=\"application/dicom\"; boundary=B".into(),
        rate: 8 << 20,
    })
    .unwrap();
    let url = pacs.dicomweb_url();
    let limits = PacsLimits {
        max_instance_bytes: 1 << 20,
        ..PacsLimits::default()
    };
    let (r, took) = watchdog(30, move || {
        DicomWebClient::new(ClientOptions::new(url))
            .unwrap()
            .with_limits(limits)
            .retrieve_instance_bytes(
                "1.2.3",
                "1.2.3.4",
                "1.2.3.4.5",
                &rapha_dicom::client::Wanted::as_stored(),
            )
    });
    let e = r.unwrap_err();
    assert!(
        matches!(
            &e,
            DicomError::ResponseTooLarge {
                limit: 1048576,
                setting: "max_instance_bytes",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn pacs_ignoring_offset_ends_paging_with_a_typed_error() {
    let pacs = HostilePacs::start(Behaviour::IgnoresOffset {
        study_uid: "1.2.826.0.1.3680043.8.498.55".into(),
        study_date: "20240110".into(),
    })
    .unwrap();
    let url = pacs.dicomweb_url();
    let (r, _) = watchdog(30, move || build(url, PacsLimits::default()));
    let e = r.unwrap_err();
    assert!(
        matches!(
            &e,
            DicomError::PagingStalled {
                what: "QIDO-RS series search",
                page: 2,
                ..
            }
        ),
        "{e:?}"
    );
    // It stopped at the first repeated page: one study search, two series pages.
    let series_pages = pacs
        .requests()
        .iter()
        .filter(|r| r.contains("/series?"))
        .count();
    assert_eq!(series_pages, 2, "{:?}", pacs.requests());
}

#[test]
fn cohort_build_ends_at_its_deadline() {
    let pacs = HostilePacs::start(Behaviour::Trickle {
        every: Duration::from_secs(1),
    })
    .unwrap();
    let url = pacs.dicomweb_url();
    let limits = PacsLimits {
        request_timeout_seconds: 60,
        cohort_deadline_seconds: 2,
        ..PacsLimits::default()
    };
    let (r, took) = watchdog(30, move || build(url, limits));
    let e = r.unwrap_err();
    assert!(
        matches!(&e, DicomError::CohortDeadline { seconds: 2 }),
        "{e:?}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[test]
fn cohort_build_ends_at_its_page_allowance() {
    let pacs = HostilePacs::start(Behaviour::IgnoresOffset {
        study_uid: "1.2.826.0.1.3680043.8.498.56".into(),
        study_date: "20240110".into(),
    })
    .unwrap();
    let url = pacs.dicomweb_url();
    let limits = PacsLimits {
        max_pages: 1,
        ..PacsLimits::default()
    };
    let (r, _) = watchdog(30, move || build(url, limits));
    let e = r.unwrap_err();
    assert!(matches!(&e, DicomError::TooManyPages { limit: 1 }), "{e:?}");
}

#[test]
fn deeply_nested_dicom_json_from_the_pacs_is_refused() {
    let doc = rapha_testkit::crafted::deep_json(&rapha_testkit::crafted::Identity::ct(9), 20_000);
    let pacs = HostilePacs::start(Behaviour::Static {
        content_type: "application/dicom+json".into(),
        body: Arc::new(doc),
    })
    .unwrap();
    let url = pacs.dicomweb_url();
    let (r, _) = watchdog(30, move || build(url, PacsLimits::default()));
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the PACS sent malformed DICOM JSON: at document: sequences nested deeper than 16 \
         levels (refused before parsing)"
    );
}

#[test]
fn pacs_limits_are_validated() {
    let mut cfg = DicomConfig::default();
    cfg.validate().unwrap();
    cfg.pacs.max_pages = 0;
    assert_eq!(
        cfg.validate().unwrap_err().to_string(),
        "DICOM configuration: dicom.pacs.max_pages must be positive"
    );
    cfg.pacs.max_pages = 1;
    cfg.pacs.request_timeout_seconds = u64::MAX;
    assert_eq!(
        cfg.validate().unwrap_err().to_string(),
        "DICOM configuration: dicom.pacs.request_timeout_seconds is longer than ten years"
    );
    let toml: DicomConfig = serde_json::from_value(serde_json::json!({
        "pacs": {"request_timeout_seconds": 30}
    }))
    .unwrap();
    assert_eq!(toml.pacs.request_timeout_seconds, 30);
    assert_eq!(toml.pacs.max_pages, PacsLimits::default().max_pages);
}
