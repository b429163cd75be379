//! What the PACS serves at run time must be what was approved (issue 18, items 4 and 11).
//!
//! A cohort is built from a real Orthanc and approved; then the PACS is changed under it, as a
//! compromised or misconfigured PACS could: an instance is deleted and another object stored
//! under the same SOP Instance UID (another patient, BurnedInAnnotation YES, an at-risk SOP
//! class, a deeply nested header). The record source must refuse each at fetch time, before a
//! pixel reaches the trainer, answer `unavailable` through the feed, count the refusal by
//! reason, and keep serving the others.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rapha_core::{HmacKey, JobId};
use rapha_dicom::cohort::{drop_opted_out_now, Cohort, CohortBuilder, InstanceSource};
use rapha_dicom::exclusion::OptOuts;
use rapha_dicom::{ClientOptions, DicomConfig, DicomWebClient, Pseudonymizer, ScopedQuery};
use rapha_enclave::dicom::DicomSource;
use rapha_enclave::feed::{self, Feed, FeedState};
use rapha_enclave::protocol::{read_frame, write_frame};
use rapha_enclave::split::split_records;
use rapha_enclave::RecordSource;
use rapha_testkit::crafted::{self, Identity};
use rapha_testkit::hostile::{multipart_instance, Behaviour, HostilePacs};
use rapha_testkit::services::Orthanc;
use rapha_testkit::victim::{isolate, Ended, Limits};
use serde_json::json;

const QUERY: &str = "StudyDate=20240105-20240105&ModalitiesInStudy=CT&limit=50";

/// Orthanc holding one plain CT instance per identity.
fn pacs_with(ids: &[Identity]) -> Option<Orthanc> {
    let orthanc = rapha_testkit::require!(Orthanc::start())?;
    for id in ids {
        orthanc.upload_bytes(&crafted::plain_part10(id)).unwrap();
    }
    Some(orthanc)
}

fn client(o: &Orthanc) -> DicomWebClient {
    DicomWebClient::new(ClientOptions::new(o.dicomweb_url())).unwrap()
}

fn build(o: &Orthanc, optouts: &OptOuts) -> Cohort {
    let config = DicomConfig::default();
    let q = ScopedQuery::parse(QUERY, &config.scope).unwrap();
    let pseudo = Pseudonymizer::new(HmacKey::from_bytes([0x44; 32]));
    CohortBuilder::new(&pseudo, &config, optouts)
        .from_dicomweb(&client(o), &q)
        .unwrap()
}

/// Replaces, in the PACS, the instance with `old`'s SOP Instance UID by `new`.
fn swap(o: &Orthanc, old: &Identity, new: &[u8]) {
    let id = o
        .instance_id(&old.sop_uid)
        .unwrap()
        .expect("instance in Orthanc");
    o.delete_instance(&id).unwrap();
    o.upload_bytes(new).unwrap();
}

/// The cohort index of the instance with this SOP Instance UID.
fn index_of(c: &Cohort, sop: &str) -> usize {
    c.entries
        .iter()
        .position(|e| matches!(&e.source, InstanceSource::DicomWeb { instance_uid, .. } if instance_uid == sop))
        .expect("instance in the cohort")
}

/// Fetches `indices` through a real feed, pipelined (so they decode on the feed's decoder
/// threads), and returns each answer: `ok` or the protocol error code.
fn feed_fetch(source: &dyn RecordSource, indices: &[usize]) -> Vec<String> {
    let splits = split_records(source.records(), 30);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.sock");
    let listener = feed::bind(&path).unwrap();
    let feed = Feed {
        job: JobId::from_bytes([3; 16]),
        confinement: "none-development",
        source,
        splits: &splits,
        state: Mutex::new(FeedState::default()),
        stop: AtomicBool::new(false),
        decoders: feed::decoders(),
    };
    std::thread::scope(|s| {
        s.spawn(|| feed.serve(&listener));
        let mut c = UnixStream::connect(&path).unwrap();
        let hello = json!({"op": "hello", "protocol": 1, "trainer": "test"});
        write_frame(&mut c, &serde_json::to_vec(&hello).unwrap(), &[]).unwrap();
        let (h, _) = read_frame(&mut c).unwrap();
        assert_eq!(h["ok"], true, "{h}");
        for i in indices {
            let f = json!({"op": "fetch", "index": i});
            write_frame(&mut c, &serde_json::to_vec(&f).unwrap(), &[]).unwrap();
        }
        let answers = indices
            .iter()
            .map(|_| {
                let (h, _) = read_frame(&mut c).unwrap();
                if h["ok"] == true {
                    "ok".to_owned()
                } else {
                    h["error"].as_str().unwrap_or("?").to_owned()
                }
            })
            .collect();
        feed.stop.store(true, Ordering::Relaxed);
        answers
    })
}

#[test]
fn instances_swapped_in_the_pacs_after_approval_are_refused_at_fetch_time() {
    let ids: Vec<Identity> = (21..=25).map(Identity::ct).collect();
    let Some(orthanc) = pacs_with(&ids) else {
        return;
    };
    let cohort = build(&orthanc, &OptOuts::none());
    assert_eq!(cohort.entries.len(), ids.len());
    let (source, _) = DicomSource::new(&cohort.entries, Some(client(&orthanc)));
    for i in 0..ids.len() {
        source.pixels(i).unwrap();
    }

    // After approval the PACS serves other objects under three approved SOP Instance UIDs.
    let other_patient = Identity {
        patient_id: "INTRUDER-0001".into(),
        patient_name: "INTRUDER^ONE".into(),
        ..ids[0].clone()
    };
    swap(&orthanc, &ids[0], &crafted::plain_part10(&other_patient));
    let burned_in = Identity {
        burned_in: Some("YES".into()),
        ..ids[1].clone()
    };
    swap(&orthanc, &ids[1], &crafted::plain_part10(&burned_in));
    let secondary_capture = Identity {
        sop_class: crafted::SECONDARY_CAPTURE.into(),
        ..ids[2].clone()
    };
    swap(
        &orthanc,
        &ids[2],
        &crafted::plain_part10(&secondary_capture),
    );

    let swapped: Vec<usize> = ids[..3]
        .iter()
        .map(|id| index_of(&cohort, &id.sop_uid))
        .collect();
    let kept: Vec<usize> = ids[3..]
        .iter()
        .map(|id| index_of(&cohort, &id.sop_uid))
        .collect();
    for &i in &swapped {
        let e = source
            .pixels(i)
            .expect_err("a swapped instance was decoded for the trainer");
        assert!(
            matches!(e, rapha_enclave::EnclaveError::RecordUnavailable { index, .. } if index == i),
            "{e:?}"
        );
    }
    // Through the feed, on its decoder threads: `unavailable` for the swapped records, the
    // others are served, and the connection goes on.
    let mut order = swapped.clone();
    order.extend(&kept);
    let answers = feed_fetch(&source, &order);
    assert_eq!(
        answers,
        ["unavailable", "unavailable", "unavailable", "ok", "ok"]
    );
    assert_eq!(
        source.fetch_refusals(),
        BTreeMap::from([
            ("burned-in-annotation".to_owned(), 1),
            ("served-patient-mismatch".to_owned(), 1),
            ("served-sop-class-mismatch".to_owned(), 1),
        ])
    );
}

/// The WADO-RS path of an instance.
fn wado(id: &Identity) -> String {
    format!(
        "/studies/{}/series/{}/instances/{}",
        id.study_uid, id.series_uid, id.sop_uid
    )
}

#[test]
fn object_of_another_study_served_at_the_approved_path_is_refused() {
    // Orthanc files an instance under its own study and answers 404 at the approved path; a
    // PACS that answers the approved path with an object of another study and series must be
    // refused by the node's own check.
    let ids: Vec<Identity> = (31..=32).map(Identity::ct).collect();
    let Some(orthanc) = pacs_with(&ids) else {
        return;
    };
    let cohort = build(&orthanc, &OptOuts::none());
    drop(orthanc);
    let moved = Identity {
        study_uid: "1.2.826.0.1.3680043.8.498.77.999".into(),
        series_uid: "1.2.826.0.1.3680043.8.498.77.999.1".into(),
        ..ids[0].clone()
    };
    let (ct, other) = multipart_instance(&crafted::plain_part10(&moved));
    let (_, plain) = multipart_instance(&crafted::plain_part10(&ids[1]));
    let hostile = HostilePacs::start(Behaviour::Routes(std::sync::Arc::new(vec![
        (wado(&ids[0]), ct.clone(), other),
        (wado(&ids[1]), ct, plain),
    ])))
    .unwrap();
    let client = DicomWebClient::new(ClientOptions::new(hostile.dicomweb_url())).unwrap();
    let (source, _) = DicomSource::new(&cohort.entries, Some(client));
    let i = index_of(&cohort, &ids[0].sop_uid);
    let e = source
        .pixels(i)
        .expect_err("an object of another study was decoded");
    assert!(
        e.to_string()
            .ends_with("the PACS served an object whose series is not the approved instance's"),
        "{e}"
    );
    source.pixels(index_of(&cohort, &ids[1].sop_uid)).unwrap();
    assert_eq!(
        source.fetch_refusals(),
        BTreeMap::from([("served-series-mismatch".to_owned(), 1)])
    );
}

#[test]
fn undecodable_pixels_served_at_fetch_time_are_refused_and_counted_by_why() {
    // The approved instances are served as they are but for their pixels: one in JPEG-LS (no
    // decoder in this build), one in JPEG 2000 with a broken codestream. This PACS ignores the
    // syntaxes the node asks for, so asked again to transcode, it serves the same JPEG-LS: that
    // instance is `transfer-syntax-not-served`. Each is refused for the rest of the job and
    // counted under its own reason; the third is served.
    let ids: Vec<Identity> = (35..=37).map(Identity::ct).collect();
    let Some(orthanc) = pacs_with(&ids) else {
        return;
    };
    let cohort = build(&orthanc, &OptOuts::none());
    drop(orthanc);
    let jpeg_ls = crafted::encapsulated_part10(&ids[0], "1.2.840.10008.1.2.4.80", &[0xFF, 0xD8]);
    let broken_j2k = crafted::encapsulated_part10(
        &ids[1],
        "1.2.840.10008.1.2.4.90",
        &[0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00],
    );
    let (ct, ls) = multipart_instance(&jpeg_ls);
    let (_, j2k) = multipart_instance(&broken_j2k);
    let (_, plain) = multipart_instance(&crafted::plain_part10(&ids[2]));
    let hostile = HostilePacs::start(Behaviour::Routes(std::sync::Arc::new(vec![
        (wado(&ids[0]), ct.clone(), ls),
        (wado(&ids[1]), ct.clone(), j2k),
        (wado(&ids[2]), ct, plain),
    ])))
    .unwrap();
    let client = DicomWebClient::new(ClientOptions::new(hostile.dicomweb_url())).unwrap();
    let (source, _) = DicomSource::new(&cohort.entries, Some(client));
    let order: Vec<usize> = ids
        .iter()
        .map(|id| index_of(&cohort, &id.sop_uid))
        .collect();
    let e = source.pixels(order[0]).expect_err("JPEG-LS was decoded");
    assert!(
        e.to_string().contains("cannot be decoded by this build"),
        "{e}"
    );
    let e = source
        .pixels(order[1])
        .expect_err("a broken codestream was decoded");
    assert!(e.to_string().contains("JPEG 2000 frame"), "{e}");
    // Asked again (a later epoch): still refused, still counted once.
    assert_eq!(
        feed_fetch(&source, &order),
        ["unavailable", "unavailable", "ok"]
    );
    assert_eq!(
        source.fetch_refusals(),
        BTreeMap::from([
            ("malformed-pixel-data".to_owned(), 1),
            ("transfer-syntax-not-served".to_owned(), 1),
        ])
    );
}

#[test]
fn deeply_nested_object_served_at_fetch_time_fails_on_a_decoder_thread_not_the_node() {
    // The cohort is approved from Orthanc; at run time a hostile PACS serves, for one approved
    // instance, a Part 10 object of the same identity whose header nests 20 000 sequences
    // (Orthanc itself crashes on such files, so a hostile server serves it). The trainer's
    // pipelined fetch decodes it on a feed decoder thread (a 2 MiB stack: ~250 levels
    // overflow it in a debug build). The node must answer `unavailable` and go on.
    let ids: Vec<Identity> = (41..=42).map(Identity::ct).collect();
    let Some(orthanc) = pacs_with(&ids) else {
        return;
    };
    let cohort = build(&orthanc, &OptOuts::none());
    drop(orthanc);
    let (ct, deep) = multipart_instance(&crafted::deep_part10(&ids[0], 20_000));
    let (_, plain) = multipart_instance(&crafted::plain_part10(&ids[1]));
    let hostile = HostilePacs::start(Behaviour::Routes(std::sync::Arc::new(vec![
        (wado(&ids[0]), ct.clone(), deep),
        (wado(&ids[1]), ct, plain),
    ])))
    .unwrap();
    let order = [
        index_of(&cohort, &ids[0].sop_uid),
        index_of(&cohort, &ids[1].sop_uid),
    ];
    let url = hostile.dicomweb_url();
    let ended = isolate(
        concat!(
            module_path!(),
            "::deeply_nested_object_served_at_fetch_time_fails_on_a_decoder_thread_not_the_node"
        ),
        Limits::default(),
        || {
            let client = DicomWebClient::new(ClientOptions::new(url)).unwrap();
            let (source, _) = DicomSource::new(&cohort.entries, Some(client));
            feed_fetch(&source, &order).join(" ")
        },
    );
    assert_eq!(ended, Ended::Returned("unavailable ok".into()));
}

#[test]
fn patient_opted_out_after_approval_is_dropped_when_the_run_starts() {
    let ids: Vec<Identity> = (51..=53).map(Identity::ct).collect();
    let Some(orthanc) = pacs_with(&ids) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optouts.csv");
    std::fs::write(&file, "PatientID\n").unwrap();
    let optouts = OptOuts::load(&file).unwrap();
    let cohort = build(&orthanc, &optouts);
    assert_eq!(cohort.entries.len(), 3, "approved with nobody opted out");

    // After approval, one patient opts out (the hospital appends to its list).
    std::fs::write(&file, format!("PatientID\n{}\n", ids[1].patient_id)).unwrap();
    let mut entries = cohort.entries.clone();
    let dropped = drop_opted_out_now(&mut entries, &optouts).unwrap();
    assert_eq!(dropped, 1);
    let (source, ids_seen) = DicomSource::new(&entries, Some(client(&orthanc)));
    assert_eq!(source.records().len(), 2);
    let gone = &cohort.entries[index_of(&cohort, &ids[1].sop_uid)].record;
    assert!(source.records().iter().all(|r| r.patient != gone.patient));
    // The guard still knows every identifier of the records it may see fed.
    assert!(!ids_seen.is_empty());

    // A cohort stored before entries carried their approved identity is matched by its raw
    // identifiers (which hold the PatientID).
    let mut legacy = cohort.entries.clone();
    for e in &mut legacy {
        e.approved = None;
    }
    assert_eq!(drop_opted_out_now(&mut legacy, &optouts).unwrap(), 1);

    // An opt-out list that can no longer be read stops the run instead of feeding everyone.
    std::fs::remove_file(&file).unwrap();
    let mut again = cohort.entries.clone();
    assert!(drop_opted_out_now(&mut again, &optouts).is_err());
}

#[test]
fn deeply_nested_instance_in_orthanc_is_refused_at_fetch_time() {
    // Orthanc accepts a header nested 30 levels (it crashes itself on ~50) and leaves the deep
    // sequence out of its DICOMweb metadata, so the cohort holds the instance; the Part 10
    // object it serves still nests 30 levels, past the node's limit of 16.
    let ids = [Identity::ct(61), Identity::ct(62)];
    let Some(orthanc) = rapha_testkit::require!(Orthanc::start()) else {
        return;
    };
    orthanc
        .upload_bytes(&crafted::deep_part10(&ids[0], 30))
        .unwrap();
    orthanc
        .upload_bytes(&crafted::plain_part10(&ids[1]))
        .unwrap();
    let cohort = build(&orthanc, &OptOuts::none());
    assert_eq!(cohort.entries.len(), 2);
    let (source, _) = DicomSource::new(&cohort.entries, Some(client(&orthanc)));
    let e = source
        .pixels(index_of(&cohort, &ids[0].sop_uid))
        .expect_err("a 30-level header was parsed");
    assert!(
        e.to_string()
            .ends_with("sequences nested deeper than 16 levels (refused before parsing)"),
        "{e}"
    );
    source.pixels(index_of(&cohort, &ids[1].sop_uid)).unwrap();
}

#[test]
fn a_cohort_stored_compressed_in_orthanc_is_served_in_syntaxes_the_node_decodes() {
    // An archive that compressed on ingest: Orthanc holds two instances in JPEG Lossless (this
    // build decodes both: they come as stored), one in JPEG-LS (no decoder here:
    // the node asks Orthanc to transcode, and it does), one in JPEG 2000 Part 2
    // (neither can: counted `transfer-syntax-not-served`), and one uncompressed. Every served
    // record's pixels are exactly those of the uncompressed original.
    // This test binary has no sandboxed decoder next to it (`rapha-decode` is not in
    // target/*/deps), so JPEG-LS is undecodable here, as on a node installed without it.
    assert!(
        std::env::var_os("RAPHA_DECODE_WORKER").is_none(),
        "run without RAPHA_DECODE_WORKER: this test needs a syntax the node cannot decode"
    );
    let ids: Vec<Identity> = (41..=45).map(Identity::ct).collect();
    let Some(orthanc) = pacs_with(&ids) else {
        return;
    };
    let cohort = build(&orthanc, &OptOuts::none());
    let order: Vec<usize> = ids
        .iter()
        .map(|id| index_of(&cohort, &id.sop_uid))
        .collect();
    let (before, _) = DicomSource::new(&cohort.entries, Some(client(&orthanc)));
    let originals: Vec<Vec<u8>> = order
        .iter()
        .map(|&i| before.pixels(i).unwrap().bytes)
        .collect();
    for (id, ts) in ids.iter().zip([
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
    ]) {
        orthanc.transcode_in_place(&id.sop_uid, ts).unwrap();
    }
    swap(
        &orthanc,
        &ids[3],
        &crafted::encapsulated_part10(&ids[3], "1.2.840.10008.1.2.4.92", &[0xFF, 0x4F]),
    );
    let (source, _) = DicomSource::new(&cohort.entries, Some(client(&orthanc)));
    for k in [0, 1, 2, 4] {
        let px = source
            .pixels(order[k])
            .unwrap_or_else(|e| panic!("instance {k}: {e}"));
        assert_eq!(px.bytes, originals[k], "instance {k}");
    }
    let e = source
        .pixels(order[3])
        .expect_err("JPEG 2000 Part 2 was decoded");
    assert!(e.to_string().contains("the PACS refused"), "{e}");
    assert_eq!(
        source.fetch_refusals(),
        BTreeMap::from([("transfer-syntax-not-served".to_owned(), 1)])
    );
}
