//! Verifying TPM evidence in software, with no TPM: the AK's certification, the quote's
//! signature, its binding, its PCRs against the recorded policy, and its freshness per AK.

use super::*;

/// Expected sha256-bank PCR values; the PCR selection quoted is exactly these indices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrPolicy {
    pub expected: BTreeMap<u8, Digest>,
}

impl PcrPolicy {
    /// The PCR indices the policy covers (the selection to quote).
    pub fn selection(&self) -> BTreeSet<u8> {
        self.expected.keys().copied().collect()
    }
}

/// What a verified quote said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedQuote {
    pub ak_name: String,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub quote_digest: Digest,
}

/// The newest quote accepted from one AK: a later quote must be strictly newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreshnessMark {
    pub reset_count: u32,
    pub restart_count: u32,
    pub clock: u64,
}

/// Verifies TPM evidence without a TPM: trusted vendor roots, certified AKs, the PCR policy,
/// and the last quote seen per AK (replay protection).
#[derive(Debug)]
pub struct TpmVerifier {
    roots: VendorRoots,
    policy: PcrPolicy,
    certified: HashMap<Vec<u8>, AkRecord>,
    last_seen: Mutex<HashMap<Vec<u8>, (u32, u32, u64)>>,
}

impl TpmVerifier {
    pub fn new(roots: VendorRoots, policy: PcrPolicy) -> Self {
        Self {
            roots,
            policy,
            certified: HashMap::new(),
            last_seen: Mutex::new(HashMap::new()),
        }
    }

    /// The freshness mark per AK (hex TPM name), for the node to persist across restarts.
    pub fn freshness_marks(&self) -> std::collections::BTreeMap<String, FreshnessMark> {
        self.last_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, (reset_count, restart_count, clock))| {
                (
                    hex::encode(name),
                    FreshnessMark {
                        reset_count: *reset_count,
                        restart_count: *restart_count,
                        clock: *clock,
                    },
                )
            })
            .collect()
    }

    /// Restores marks saved by [`TpmVerifier::freshness_marks`], so a quote accepted before a
    /// restart is still a replay after it. Names that are not hex are ignored.
    pub fn restore_freshness_marks(
        &mut self,
        marks: &std::collections::BTreeMap<String, FreshnessMark>,
    ) {
        let seen = self
            .last_seen
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, m) in marks {
            if let Ok(name) = hex::decode(name) {
                let mark = (m.reset_count, m.restart_count, m.clock);
                let entry = seen.entry(name).or_insert(mark);
                *entry = (*entry).max(mark);
            }
        }
    }

    /// Trusts an AK that enrolment certified. Its EK certificate must chain to the roots.
    pub fn trust_ak(&mut self, record: AkRecord) -> Result<()> {
        self.roots.verify_ek_cert(&record.ek_cert)?;
        check_ak_attributes(&record.ak_public)?;
        self.certified.insert(ak_name(&record.ak_public), record);
        Ok(())
    }

    /// Verifies one quote against `binding`. A quote that verifies moves this AK's freshness
    /// mark forward, so the same quote verifies once.
    ///
    /// # Errors
    /// In order of checking: [`AttestError::EkCertUntrusted`], [`AttestError::AkNotCertified`],
    /// [`AttestError::QuoteSignatureInvalid`], [`AttestError::QuoteMalformed`],
    /// [`AttestError::QuoteWrongNonce`], [`AttestError::PcrSelectionMismatch`],
    /// [`AttestError::PcrDigestMismatch`], [`AttestError::PcrPolicyViolation`],
    /// [`AttestError::QuoteReplayed`].
    pub fn verify(&self, ev: &TpmEvidence, binding: &Digest) -> Result<VerifiedQuote> {
        self.roots.verify_ek_cert(&ev.ek_cert)?;
        let name = ak_name(&ev.ak_public);
        let not_certified = || AttestError::AkNotCertified {
            ak_name: hex::encode(&name),
        };
        let record = self.certified.get(&name).ok_or_else(not_certified)?;
        if record.ek_cert != ev.ek_cert {
            return Err(not_certified());
        }
        verify_signature(&record.ak_public, &ev.attest, &ev.signature)?;

        let attest = Attest::unmarshall(&ev.attest)
            .map_err(|e| AttestError::QuoteMalformed(e.to_string()))?;
        if attest.marshall().ok().as_deref() != Some(ev.attest.as_slice()) {
            return Err(AttestError::QuoteMalformed(
                "trailing or non-canonical bytes".into(),
            ));
        }
        let AttestInfo::Quote { info } = attest.attested() else {
            return Err(AttestError::QuoteMalformed(
                "the signed structure is not a quote".into(),
            ));
        };
        if attest.extra_data().value() != binding.as_bytes().as_slice() {
            return Err(AttestError::QuoteWrongNonce {
                expected: binding.to_hex(),
                found: hex::encode(attest.extra_data().value()),
            });
        }

        let quoted = quoted_selection(info.pcr_selection())?;
        let wanted = self.policy.selection();
        let supplied: BTreeSet<u8> = ev.pcrs.keys().copied().collect();
        if quoted != wanted || supplied != wanted {
            return Err(AttestError::PcrSelectionMismatch {
                expected: format!("sha256:{wanted:?}"),
                found: format!("sha256:{quoted:?}"),
            });
        }
        if info.pcr_digest().value() != pcr_composite_digest(&ev.pcrs).as_slice() {
            return Err(AttestError::PcrDigestMismatch);
        }
        for (pcr, expected) in &self.policy.expected {
            let found = ev.pcrs.get(pcr).ok_or(AttestError::PcrDigestMismatch)?;
            if found != expected {
                return Err(AttestError::PcrPolicyViolation {
                    pcr: *pcr,
                    expected: expected.to_hex(),
                    found: found.to_hex(),
                });
            }
        }

        let clock = attest.clock_info();
        let mark = (clock.reset_count(), clock.restart_count(), clock.clock());
        {
            // A poisoned lock only means another verification panicked mid-way; the map itself
            // is still a valid set of marks.
            let mut seen = self
                .last_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(prev) = seen.get(&name) {
                if mark <= *prev {
                    return Err(AttestError::QuoteReplayed {
                        reset_count: mark.0,
                        restart_count: mark.1,
                        clock: mark.2,
                    });
                }
            }
            seen.insert(name.clone(), mark);
        }
        Ok(VerifiedQuote {
            ak_name: hex::encode(&name),
            clock: mark.2,
            reset_count: mark.0,
            restart_count: mark.1,
            quote_digest: ev.quote_digest(),
        })
    }
}

fn quoted_selection(list: &PcrSelectionList) -> Result<BTreeSet<u8>> {
    let mut out = BTreeSet::new();
    for sel in list.get_selections() {
        if sel.hashing_algorithm() != HashingAlgorithm::Sha256 {
            return Err(AttestError::PcrSelectionMismatch {
                expected: "sha256 bank only".into(),
                found: format!("{:?} bank", sel.hashing_algorithm()),
            });
        }
        for slot in sel.selected() {
            let bit = u32::from(slot);
            // A PcrSlot is a single bit, so its index fits a u8 (at most 31).
            out.insert(u8::try_from(bit.trailing_zeros()).unwrap_or(u8::MAX));
        }
    }
    Ok(out)
}

/// ECDSA P-256 / SHA-256 verification of the quote with the AK's public point.
fn verify_signature(ak_public: &[u8], attest: &[u8], signature: &[u8]) -> Result<()> {
    use p256::ecdsa::signature::Verifier;
    let public = Public::unmarshall(ak_public)
        .map_err(|e| AttestError::QuoteMalformed(format!("AK public area: {e}")))?;
    let Public::Ecc { unique, .. } = public else {
        return Err(AttestError::QuoteMalformed("AK is not an ECC key".into()));
    };
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(&left_pad32(unique.x().value())?);
    sec1.extend_from_slice(&left_pad32(unique.y().value())?);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|_| AttestError::QuoteMalformed("AK is not a P-256 point".into()))?;
    let sig = Signature::unmarshall(signature).map_err(|_| AttestError::QuoteSignatureInvalid)?;
    let Signature::EcDsa(ecc) = sig else {
        return Err(AttestError::QuoteSignatureInvalid);
    };
    if ecc.hashing_algorithm() != HashingAlgorithm::Sha256 {
        return Err(AttestError::QuoteSignatureInvalid);
    }
    let mut rs = left_pad32(ecc.signature_r().value())
        .map_err(|_| AttestError::QuoteSignatureInvalid)?
        .to_vec();
    rs.extend_from_slice(
        &left_pad32(ecc.signature_s().value()).map_err(|_| AttestError::QuoteSignatureInvalid)?,
    );
    let sig =
        p256::ecdsa::Signature::from_slice(&rs).map_err(|_| AttestError::QuoteSignatureInvalid)?;
    key.verify(attest, &sig)
        .map_err(|_| AttestError::QuoteSignatureInvalid)
}

fn left_pad32(v: &[u8]) -> Result<[u8; 32]> {
    let v = strip_zeros(v);
    let mut out = [0u8; 32];
    let start = 32usize
        .checked_sub(v.len())
        .ok_or_else(|| AttestError::QuoteMalformed("ECC value longer than 32 bytes".into()))?;
    out.get_mut(start..)
        .ok_or_else(|| AttestError::QuoteMalformed("ECC value".into()))?
        .copy_from_slice(v);
    Ok(out)
}
