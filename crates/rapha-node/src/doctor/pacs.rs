//! The PACS side: the DICOMweb endpoints answer a scoped QIDO-RS search over HTTPS with their
//! credentials, the opt-out list reads, and the `[dicom]` scope limits are sound (**I2**).

use std::path::Path;

use crate::config::{Config, DicomWebAuth, DicomWebEndpoint};

use super::{fail, Outcome, NETWORK_TIMEOUT};

pub(super) fn check_dicomweb(config: &Config, e: &DicomWebEndpoint) -> Outcome {
    if !e.url.starts_with("https://") {
        return fail(
            format!("{} is not HTTPS", e.url),
            "use the PACS's https:// DICOMweb URL and set ca_file to the CA that issued its certificate",
        );
    }
    let auth = match &e.auth {
        DicomWebAuth::None => None,
        DicomWebAuth::Bearer { token_file } => {
            Some(rapha_dicom::Auth::Bearer(read_secret_text(token_file)?))
        }
        DicomWebAuth::Header { name, value_file } => Some(rapha_dicom::Auth::Header {
            name: name.clone(),
            value: read_secret_text(value_file)?,
        }),
    };
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

fn read_secret_text(path: &Path) -> Result<zeroize::Zeroizing<String>, (String, String)> {
    use rapha_core::{check_private_mode, ModeError};
    match check_private_mode(path) {
        Ok(()) => {}
        Err(ModeError::Loose(mode)) => {
            return fail(
                format!("credential file {} has mode {mode:o}", path.display()),
                format!("run `chmod 600 {}`", path.display()),
            )
        }
        Err(ModeError::Io(e)) => {
            return fail(
                format!("cannot read credential file {}: {e}", path.display()),
                "create the file",
            )
        }
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).or_else(|e| {
        fail(
            format!("cannot read credential file {}: {e}", path.display()),
            "create the file",
        )
    })?);
    Ok(zeroize::Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

pub(super) fn check_optouts(config: &Config) -> Outcome {
    let path = &config.cohort.opt_out_file;
    let text = std::fs::read_to_string(path).or_else(|e| {
        fail(
            format!("cannot read {}: {e}", path.display()),
            "create the opt-out list: a CSV file whose first line is `PatientID` (it may have no other line)",
        )
    })?;
    if text.lines().next().map(str::trim) != Some("PatientID") {
        return fail(
            format!(
                "{} does not start with the header line `PatientID`",
                path.display()
            ),
            "make the first line `PatientID`, then one opted-out PatientID per line",
        );
    }
    let n = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    Ok(format!("{}: {n} opted-out patient(s)", path.display()))
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
