//! The digests a DPO signs and the policy decisions bind, recomputed by an independent RFC 8785
//! implementation (Python `rfc8785` + `hashlib`); v1 job digests of the pre-issue-18 approval
//! store (`testdata/v1`) still verify.

use std::path::Path;

use rapha_core::Digest;
use rapha_policy::{
    job_digest, job_digest_v1, job_digest_v2, JobDigestRef, JobDigestVersion, ReviewRequest,
    JOB_DIGEST_V2,
};
use serde_json::{json, Value};

use crate::common::{admission_input, final_input, hospital, request};

/// `$RAPHA_PYTHON` with rfc8785, or `None` (a hard failure when RAPHA_REQUIRE_SERVICES=1).
fn python() -> Option<String> {
    crate::python::venv_python("rfc8785", "rfc8785")
}

/// Python builds each document itself from the parts and hashes its RFC 8785 bytes.
const RECOMPUTE: &str = r#"
import hashlib, json, sys, rfc8785
out = []
for item in json.load(sys.stdin):
    if item["kind"] == "job":
        doc = {"cohort": item["cohort"], "request": item["request"], "version": "rapha-job/2"}
    else:
        doc = item["value"]
    out.append(hashlib.sha256(rfc8785.dumps(doc)).hexdigest())
json.dump(out, sys.stdout)
"#;

fn recompute(py: &str, items: &[Value]) -> Vec<String> {
    let out = crate::python::run_json(py, &["-c", RECOMPUTE], Some(&Value::from(items)));
    serde_json::from_value(out).unwrap()
}

#[test]
fn job_digest_v2_is_recomputed_by_any_jcs_library() {
    let Some(py) = python() else { return };
    let mut requests = vec![request()];
    let mut r = request();
    r.publisher = "Ærø-klinikk \u{1f600} \"quoted\" \\ \n".into();
    r.query.accession_numbers = vec!["ACC\u{7}1".into(), "€".into()];
    r.fee = "9007199254.740991".parse().unwrap();
    requests.push(r);
    let commitments = [Digest::of(b"cohort A"), Digest::of(b"cohort B")];
    let mut items = vec![];
    let mut ours = vec![];
    for req in &requests {
        for c in &commitments {
            items.push(json!({"kind": "job", "cohort": c.to_hex(), "request": req}));
            ours.push(job_digest_v2(req, c).unwrap().to_hex());
            assert_eq!(job_digest(req, c).unwrap(), job_digest_v2(req, c).unwrap());
        }
    }
    // The policy inputs and hospital data each decision digest binds.
    for v in [
        serde_json::to_value(admission_input()).unwrap(),
        serde_json::to_value(final_input()).unwrap(),
        hospital().data_json(),
    ] {
        ours.push(rapha_core::jcs::digest_of(&v).unwrap().to_hex());
        items.push(json!({"kind": "value", "value": v}));
    }
    assert_eq!(recompute(&py, &items), ours);
    assert_eq!(JOB_DIGEST_V2, "rapha-job/2");
}

#[test]
fn job_digest_v2_refuses_a_request_with_no_canonical_form() {
    let mut r = request();
    r.fee = rapha_core::Usdc::from_base_units(1 << 53);
    let err = job_digest_v2(&r, &Digest::of(b"c")).unwrap_err();
    assert!(err.to_string().contains("no canonical JSON form"), "{err}");
    // v1 never canonicalized, so it still has a digest for such a stored request.
    let _ = job_digest_v1(&r, &Digest::of(b"c"));
}

#[test]
fn reviews_and_review_refs_record_their_digest_version() {
    let review = ReviewRequest::new(request(), crate::gates_cohort());
    assert_eq!(review.digest_version, JobDigestVersion::V2);
    let json = serde_json::to_value(&review).unwrap();
    assert_eq!(json["digest_version"], 2);
    // A review written before versions has no such field: v1.
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("digest_version");
    let old: ReviewRequest = serde_json::from_value(old).unwrap();
    assert_eq!(old.digest_version, JobDigestVersion::V1);
    assert_eq!(
        old.job_digest().unwrap(),
        job_digest_v1(&old.job, &old.cohort.commitment)
    );
    // A version this code does not know is refused, not guessed.
    let mut newer = json;
    newer["digest_version"] = 3.into();
    let err = serde_json::from_value::<ReviewRequest>(newer).unwrap_err();
    assert!(
        err.to_string().contains("job digest version 3 is newer"),
        "{err}"
    );
    // The node's review artifact: a bare digest (before versions) is v1.
    let d = Digest::of(b"x");
    let bare: JobDigestRef = serde_json::from_value(json!(d.to_hex())).unwrap();
    assert_eq!(bare.digest_version, JobDigestVersion::V1);
    let tagged: JobDigestRef = serde_json::from_value(
        serde_json::to_value(JobDigestRef {
            job_digest: d,
            digest_version: JobDigestVersion::V2,
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (tagged.job_digest, tagged.digest_version),
        (d, JobDigestVersion::V2)
    );
}

/// Every review in the pre-issue-18 approval store hashes (v1) to the digest in its name.
#[test]
fn v1_approval_store_reviews_keep_their_v1_digests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/v1/node/approvals");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let Some(hex) = name.strip_suffix(".review.json") else {
            continue;
        };
        let review: ReviewRequest =
            serde_json::from_slice(&std::fs::read(dir.join(&name)).unwrap()).unwrap();
        assert_eq!(review.digest_version, JobDigestVersion::V1);
        assert_eq!(review.job_digest().unwrap().to_hex(), hex);
        assert_ne!(
            job_digest_v2(&review.job, &review.cohort.commitment)
                .unwrap()
                .to_hex(),
            hex
        );
        n += 1;
    }
    assert_eq!(n, 15);
}
