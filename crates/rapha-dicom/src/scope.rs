//! The scope guard (**I2**): a [`ScopedQuery`] can only be made by [`ScopedQuery::parse`] or
//! [`ScopedQuery::from_cohort_query`], which refuse any query that does not narrow the cohort.
//! The DICOMweb client only searches with a `ScopedQuery`, so a PACS-wide query cannot be
//! built, let alone sent.
//!
//! Rules (each refusal names one, see [`ScopeRule`]):
//!
//! | rule | refuses |
//! |---|---|
//! | `study-level-only` | `/series`, `/instances` or any resource other than `/studies` |
//! | `allowed-keys` | a matching key other than StudyInstanceUID, AccessionNumber, StudyDate, ModalitiesInStudy, limit |
//! | `no-empty-value` | `Key=` (universal matching) |
//! | `no-wildcards` | `*`, `?` or `\` in any value (wildcard-only or partial matching) |
//! | `no-fuzzy-matching` | `fuzzymatching=true` |
//! | `valid-value` | a UID, date, modality or accession number that is not well formed |
//! | `narrowing-key-required` | neither explicit UIDs/accession numbers nor StudyDate + ModalitiesInStudy |
//! | `date-range-bounded` | open-ended ranges, reversed ranges, ranges longer than the configured maximum |
//! | `limit-required` | no `limit`, `limit=0`, or a limit above the configured cap |
//! | `list-size` | more explicit UIDs / accession numbers than the configured cap |

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::date::{self, Date};

/// Hospital-configured limits of the scope guard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeLimits {
    /// Longest StudyDate range accepted, in days (inclusive of both ends).
    pub max_date_range_days: u32,
    /// Highest `limit` (studies) a query may ask for.
    pub max_limit: u32,
    /// Most explicit StudyInstanceUIDs or AccessionNumbers in one query.
    pub max_list: usize,
    /// QIDO page size (`limit` per request while paging).
    pub page_size: u32,
}

impl Default for ScopeLimits {
    fn default() -> Self {
        Self {
            max_date_range_days: 366,
            max_limit: 10_000,
            max_list: 1_000,
            page_size: 100,
        }
    }
}

/// The rule a refused query broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeRule {
    StudyLevelOnly,
    AllowedKeys,
    NoEmptyValue,
    NoWildcards,
    NoFuzzyMatching,
    ValidValue,
    NarrowingKeyRequired,
    DateRangeBounded,
    LimitRequired,
    ListSize,
}

impl ScopeRule {
    /// The rule's name as printed in refusals and documentation.
    pub const fn name(self) -> &'static str {
        match self {
            Self::StudyLevelOnly => "study-level-only",
            Self::AllowedKeys => "allowed-keys",
            Self::NoEmptyValue => "no-empty-value",
            Self::NoWildcards => "no-wildcards",
            Self::NoFuzzyMatching => "no-fuzzy-matching",
            Self::ValidValue => "valid-value",
            Self::NarrowingKeyRequired => "narrowing-key-required",
            Self::DateRangeBounded => "date-range-bounded",
            Self::LimitRequired => "limit-required",
            Self::ListSize => "list-size",
        }
    }
}

impl fmt::Display for ScopeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A query refused by the scope guard. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query refused by scope rule '{rule}': {detail} (no request was sent to the PACS)")]
pub struct ScopeRefusal {
    pub rule: ScopeRule,
    pub detail: String,
}

fn refuse<T>(rule: ScopeRule, detail: impl Into<String>) -> Result<T, ScopeRefusal> {
    Err(ScopeRefusal {
        rule,
        detail: detail.into(),
    })
}

/// A query that narrows the cohort. Only the constructors here can make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedQuery {
    study_uids: Vec<String>,
    accessions: Vec<String>,
    date_range: Option<(Date, Date)>,
    modalities: Vec<String>,
    limit: u32,
    page_size: u32,
}

impl ScopedQuery {
    /// Parses QIDO-RS study search parameters (`StudyDate=20240101-20240131&ModalitiesInStudy=CT&limit=50`),
    /// optionally prefixed by the resource (`studies?…`). Repeated keys and comma-separated
    /// values both give lists.
    ///
    /// # Errors
    /// [`ScopeRefusal`] naming the rule broken.
    pub fn parse(query: &str, limits: &ScopeLimits) -> Result<Self, ScopeRefusal> {
        let query = query.trim();
        let params = match query
            .split_once('?')
            .filter(|(resource, _)| !resource.contains('='))
        {
            Some((resource, params)) => {
                let r = resource.trim_matches('/');
                let r = r.rsplit('/').next().unwrap_or(r);
                if r != "studies" {
                    return refuse(
                        ScopeRule::StudyLevelOnly,
                        format!("searching /{r} is not allowed: search /studies with narrowing keys; series and instances are listed per study"),
                    );
                }
                params
            }
            None if query.contains('=') || query.is_empty() => query,
            None => return refuse(
                ScopeRule::StudyLevelOnly,
                "expected QIDO-RS study search parameters such as 'AccessionNumber=A1&limit=10'",
            ),
        };
        let mut raw = RawQuery::default();
        for pair in params.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = rapha_core::percent::decode(k).map_err(|_| ScopeRefusal {
                rule: ScopeRule::ValidValue,
                detail: "bad percent-encoding in a key".into(),
            })?;
            let v = rapha_core::percent::decode(v).map_err(|_| ScopeRefusal {
                rule: ScopeRule::ValidValue,
                detail: format!("bad percent-encoding in the value of {k}"),
            })?;
            raw.add(&k, &v)?;
        }
        raw.finish(limits)
    }

    /// Builds the query for a job's [`rapha_core::CohortQuery`].
    ///
    /// # Errors
    /// [`ScopeRefusal`] naming the rule broken.
    pub fn from_cohort_query(
        q: &rapha_core::CohortQuery,
        limits: &ScopeLimits,
    ) -> Result<Self, ScopeRefusal> {
        let mut raw = RawQuery::default();
        for u in &q.study_uids {
            raw.add("StudyInstanceUID", u)?;
        }
        for a in &q.accession_numbers {
            raw.add("AccessionNumber", a)?;
        }
        if let Some(d) = &q.study_date {
            raw.add("StudyDate", d)?;
        }
        for m in &q.modalities {
            raw.add("ModalitiesInStudy", m)?;
        }
        if let Some(l) = q.limit {
            raw.add("limit", &l.to_string())?;
        }
        raw.finish(limits)
    }

    /// The most studies this query may return.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Explicit StudyInstanceUIDs.
    pub fn study_uids(&self) -> &[String] {
        &self.study_uids
    }

    /// Explicit AccessionNumbers.
    pub fn accessions(&self) -> &[String] {
        &self.accessions
    }

    /// The StudyDate range, both ends inclusive.
    pub fn date_range(&self) -> Option<(Date, Date)> {
        self.date_range
    }

    /// ModalitiesInStudy values.
    pub fn modalities(&self) -> &[String] {
        &self.modalities
    }

    /// QIDO page size used while paging.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The QIDO-RS parameter sets (without paging) whose union is the cohort: one request per
    /// explicit UID or accession number, or one for a date range. ModalitiesInStudy is not sent:
    /// Orthanc 1.10 answers nothing past the first page when it is a matching key (offset > 0
    /// with ModalitiesInStudy returns an empty array), which would silently truncate a cohort.
    /// The client filters modalities on the returned ModalitiesInStudy instead
    /// ([`ScopedQuery::wants_modalities`]); the request stays bounded by the date range and limit.
    pub(crate) fn request_params(&self) -> Vec<Vec<(&'static str, String)>> {
        let mut common: Vec<(&'static str, String)> = Vec::new();
        if let Some((a, b)) = self.date_range {
            common.push((
                "StudyDate",
                format!("{}-{}", date::to_da(a), date::to_da(b)),
            ));
        }
        let mut out = Vec::new();
        if !self.study_uids.is_empty() {
            for u in &self.study_uids {
                let mut p = common.clone();
                p.push(("StudyInstanceUID", u.clone()));
                out.push(p);
            }
        } else if !self.accessions.is_empty() {
            for a in &self.accessions {
                let mut p = common.clone();
                p.push(("AccessionNumber", a.clone()));
                out.push(p);
            }
        } else {
            out.push(common);
        }
        out
    }

    /// Whether a study with these ModalitiesInStudy is one the query asked for.
    pub(crate) fn wants_modalities(&self, modalities: &[&str]) -> bool {
        self.modalities.is_empty()
            || modalities
                .iter()
                .any(|m| self.modalities.iter().any(|x| x == m))
    }

    /// Whether a study the PACS returned is inside this query's scope (defence in depth
    /// against a PACS that ignores a matching key).
    pub(crate) fn admits(
        &self,
        study_uid: &str,
        accession: Option<&str>,
        date: Option<Date>,
    ) -> bool {
        if !self.study_uids.is_empty() && !self.study_uids.iter().any(|u| u == study_uid) {
            return false;
        }
        if !self.accessions.is_empty()
            && !accession.is_some_and(|a| self.accessions.iter().any(|x| x == a))
        {
            return false;
        }
        if let Some((a, b)) = self.date_range {
            if !date.is_some_and(|d| a <= d && d <= b) {
                return false;
            }
        }
        true
    }
}

#[derive(Default)]
struct RawQuery {
    study_uids: BTreeSet<String>,
    accessions: BTreeSet<String>,
    study_date: Option<String>,
    modalities: BTreeSet<String>,
    limit: Option<String>,
}

impl RawQuery {
    fn add(&mut self, key: &str, value: &str) -> Result<(), ScopeRefusal> {
        if key.eq_ignore_ascii_case("fuzzymatching") {
            if value.eq_ignore_ascii_case("false") {
                return Ok(());
            }
            return refuse(
                ScopeRule::NoFuzzyMatching,
                "fuzzy matching widens matches beyond what was asked for",
            );
        }
        let canonical = match key {
            "StudyInstanceUID" | "0020000D" | "0020000d" => "StudyInstanceUID",
            "AccessionNumber" | "00080050" => "AccessionNumber",
            "StudyDate" | "00080020" => "StudyDate",
            "ModalitiesInStudy" | "00080061" => "ModalitiesInStudy",
            "limit" => "limit",
            other => {
                return refuse(
                    ScopeRule::AllowedKeys,
                    format!(
                        "key {:?} is not allowed; use StudyInstanceUID, AccessionNumber, StudyDate with ModalitiesInStudy, and limit",
                        other.chars().take(40).collect::<String>()
                    ),
                )
            }
        };
        if value.trim().is_empty() {
            return refuse(
                ScopeRule::NoEmptyValue,
                format!("{canonical} has an empty value, which matches everything"),
            );
        }
        if value.contains(['*', '?', '\\']) {
            return refuse(
                ScopeRule::NoWildcards,
                format!("{canonical} contains a wildcard or multi-value separator"),
            );
        }
        let values: Vec<&str> = if matches!(canonical, "StudyDate" | "limit") {
            vec![value.trim()]
        } else {
            value.split(',').map(str::trim).collect()
        };
        for v in values {
            if v.is_empty() {
                return refuse(
                    ScopeRule::NoEmptyValue,
                    format!("{canonical} has an empty list entry"),
                );
            }
            match canonical {
                "StudyInstanceUID" => {
                    if !is_uid(v) {
                        return refuse(
                            ScopeRule::ValidValue,
                            "StudyInstanceUID must be digits and dots, at most 64 characters",
                        );
                    }
                    self.study_uids.insert(v.to_owned());
                }
                "AccessionNumber" => {
                    if v.len() > 16 || v.chars().any(|c| c.is_control()) {
                        return refuse(
                            ScopeRule::ValidValue,
                            "AccessionNumber must be at most 16 printable characters",
                        );
                    }
                    self.accessions.insert(v.to_owned());
                }
                "ModalitiesInStudy" => {
                    if v.is_empty()
                        || v.len() > 16
                        || !v
                            .bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                    {
                        return refuse(
                            ScopeRule::ValidValue,
                            "ModalitiesInStudy values are code strings such as CT or MR",
                        );
                    }
                    self.modalities.insert(v.to_owned());
                }
                "StudyDate" => {
                    if self.study_date.replace(v.to_owned()).is_some() {
                        return refuse(ScopeRule::ValidValue, "StudyDate given more than once");
                    }
                }
                _ => {
                    if self.limit.replace(v.to_owned()).is_some() {
                        return refuse(ScopeRule::ValidValue, "limit given more than once");
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self, limits: &ScopeLimits) -> Result<ScopedQuery, ScopeRefusal> {
        let date_range = match &self.study_date {
            None => None,
            Some(d) => Some(parse_range(d, limits)?),
        };
        let explicit = !self.study_uids.is_empty() || !self.accessions.is_empty();
        let date_and_modality = date_range.is_some() && !self.modalities.is_empty();
        if !explicit && !date_and_modality {
            return refuse(
                ScopeRule::NarrowingKeyRequired,
                "the query must name StudyInstanceUIDs or AccessionNumbers, or give a bounded StudyDate range together with ModalitiesInStudy",
            );
        }
        let n = self.study_uids.len().max(self.accessions.len());
        if n > limits.max_list {
            return refuse(
                ScopeRule::ListSize,
                format!(
                    "{n} explicit identifiers, the configured maximum is {}",
                    limits.max_list
                ),
            );
        }
        let limit = match self.limit {
            None => {
                return refuse(
                    ScopeRule::LimitRequired,
                    format!("a limit is required (at most {})", limits.max_limit),
                )
            }
            Some(l) => match l.parse::<u32>() {
                Ok(0) | Err(_) => {
                    return refuse(
                        ScopeRule::LimitRequired,
                        "limit must be a positive whole number",
                    )
                }
                Ok(l) if l > limits.max_limit => {
                    return refuse(
                        ScopeRule::LimitRequired,
                        format!(
                            "limit {l} is above the configured maximum {}",
                            limits.max_limit
                        ),
                    )
                }
                Ok(l) => l,
            },
        };
        Ok(ScopedQuery {
            study_uids: self.study_uids.into_iter().collect(),
            accessions: self.accessions.into_iter().collect(),
            date_range,
            modalities: self.modalities.into_iter().collect(),
            limit,
            page_size: limits.page_size.clamp(1, 1000),
        })
    }
}

fn parse_range(s: &str, limits: &ScopeLimits) -> Result<(Date, Date), ScopeRefusal> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s, s),
    };
    if a.is_empty() || b.is_empty() {
        return refuse(
            ScopeRule::DateRangeBounded,
            "StudyDate range is open-ended; give both ends (YYYYMMDD-YYYYMMDD)",
        );
    }
    let parse = |d: &str| {
        date::parse_da(d).ok_or_else(|| ScopeRefusal {
            rule: ScopeRule::ValidValue,
            detail: "StudyDate must be YYYYMMDD or YYYYMMDD-YYYYMMDD".into(),
        })
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if b < a {
        return refuse(
            ScopeRule::DateRangeBounded,
            "StudyDate range ends before it starts",
        );
    }
    let days = date::days_inclusive(a, b);
    if days > i64::from(limits.max_date_range_days) {
        return refuse(
            ScopeRule::DateRangeBounded,
            format!(
                "StudyDate range spans {days} days, the configured maximum is {}",
                limits.max_date_range_days
            ),
        );
    }
    Ok((a, b))
}

/// A DICOM UID: digits and dots, 1-64 characters, no empty component.
pub fn is_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.split('.').all(|c| !c.is_empty())
}
