//! The PACS side: the DICOMweb endpoints answer a scoped QIDO-RS search over HTTPS with their
//! credentials (an `http://` endpoint is probed too, so the report says whether it answered,
//! and fails for want of TLS), the opt-out list reads, and the `[dicom]` scope limits are sound (**I2**).

use crate::config::{Config, DicomWebEndpoint};

use super::{fail, Outcome, NETWORK_TIMEOUT};

pub(super) fn check_dicomweb(config: &Config, e: &DicomWebEndpoint) -> Outcome {
    let probed = probe_dicomweb(config, e);
    if e.url.starts_with("https://") {
        return probed;
    }
    // Plain HTTP carries identifiers in clear on the hospital's network: never a PASS. The
    // probe still runs, so the admin learns whether the PACS is reachable and speaks
    // DICOMweb before switching to its HTTPS URL.
    let reached = match probed {
        Ok(answer) => answer,
        Err((detail, _)) => detail,
    };
    fail(
        format!("{} is not HTTPS; over HTTP, {reached}", e.url),
        "use the PACS's https:// DICOMweb URL and set ca_file to the CA that issued its certificate",
    )
}

/// A real, narrow QIDO-RS search through the node's own client (its TLS, credentials and
/// scope checks).
fn probe_dicomweb(config: &Config, e: &DicomWebEndpoint) -> Outcome {
    let auth = e.auth.load().or_else(|(path, err)| {
        let fix = match &err {
            rapha_core::fs::SecretFileError::Loose(_) => {
                format!("run `chmod 600 {}`", path.display())
            }
            rapha_core::fs::SecretFileError::Io(_) => "create the file".to_owned(),
            other => format!("fix {}: {other}", path.display()),
        };
        fail(format!("credential file {}: {err}", path.display()), fix)
    })?;
    let opts = rapha_dicom::ClientOptions {
        base_url: e.url.clone(),
        auth,
        ca_pem: e.ca_file.clone(),
        timeout: NETWORK_TIMEOUT,
    };
    let client = rapha_dicom::DicomWebClient::new(opts)
        .or_else(|err| fail(err.to_string(), "fix the endpoint's url, ca_file or auth"))?;
    let limits = config
        .dicom
        .as_ref()
        .map(|d| d.scope.clone())
        .unwrap_or_default();
    // A real, narrow study search: one day, one result. It proves reachability, TLS, auth and
    // QIDO-RS support without listing anything of substance.
    let modality = config
        .policy
        .modalities
        .first()
        .map_or("CT", String::as_str);
    let probe = format!("StudyDate=20000101-20000101&ModalitiesInStudy={modality}&limit=1");
    let query = rapha_dicom::ScopedQuery::parse(&probe, &limits).or_else(|err| {
        fail(
            format!("cannot build the probe query: {err}"),
            "check [dicom.scope]",
        )
    })?;
    match client.search_studies(&query) {
        Ok(studies) => Ok(format!("{} answered a scoped QIDO-RS study search ({} result(s))", e.url, studies.len())),
        Err(err) => fail(
            format!("{} did not answer a scoped QIDO-RS search: {err}", e.url),
            "check the PACS is reachable from this appliance, its certificate chains to ca_file, and the credentials",
        ),
    }
}

pub(super) fn check_optouts(config: &Config) -> Outcome {
    // The node's own reader: what doctor accepts is exactly what a run will read.
    let path = &config.cohort.opt_out_file;
    if !path.exists() {
        return fail(
            format!("{} does not exist", path.display()),
            "create the opt-out list: a CSV file whose first line is `PatientID` (it may have no other line)",
        );
    }
    let list = rapha_dicom::exclusion::OptOuts::load(path).or_else(|e| {
        fail(
            e.to_string(),
            "save the list as CSV UTF-8 with one PatientID per line (or a column headed `PatientID`), then run doctor again",
        )
    })?;
    Ok(format!(
        "{}: {} opted-out patient(s)",
        path.display(),
        list.len()
    ))
}

pub(super) fn check_scope(config: &Config) -> Outcome {
    let Some(d) = &config.dicom else {
        return fail(
            "no [dicom] section: scope limits, fields and exclusions are not set",
            "add [dicom.scope] with max_date_range_days, max_limit, max_list, page_size",
        );
    };
    d.validate()
        .or_else(|e| fail(e.to_string(), "fix the [dicom] section"))?;
    let s = &d.scope;
    Ok(format!(
        "at most {} studies per job, date ranges up to {} days, lists up to {}",
        s.max_limit, s.max_date_range_days, s.max_list
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_optouts(bytes: &[u8]) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::parse(crate::init::PRODUCTION_TEMPLATE).unwrap();
        config.cohort.opt_out_file = dir.path().join("optouts.csv");
        std::fs::write(&config.cohort.opt_out_file, bytes).unwrap();
        (dir, config)
    }

    /// Doctor reads the list with the node's own reader: a spreadsheet's export passes with its
    /// count, and a list the node would refuse fails here, with the line, before any run.
    #[test]
    fn doctor_reads_the_opt_out_list_as_the_run_will() {
        let (_dir, config) =
            with_optouts(b"\xEF\xBB\xBFPatient ID;Date\r\nPAT-1;2024\r\nPAT-2;2025\r\n");
        let detail = check_optouts(&config).unwrap();
        assert!(detail.ends_with(": 2 opted-out patient(s)"), "{detail}");

        let (_dir, config) = with_optouts(b"PatientID\nPAT-1\nM\xFCLLER\n");
        let (detail, fix) = check_optouts(&config).unwrap_err();
        assert!(detail.contains("line 3"), "{detail}");
        assert!(fix.contains("UTF-8"), "{fix}");

        let (dir, mut config) = with_optouts(b"");
        config.cohort.opt_out_file = dir.path().join("missing.csv");
        let (detail, _) = check_optouts(&config).unwrap_err();
        assert!(detail.ends_with("does not exist"), "{detail}");
    }
}
