//! Records one honest swtpm quote as an offline fixture (testdata/tpm/): the EK CA, the
//! certified AK's verifier record, the PCR policy and the evidence. The fuzz targets and the
//! stable proptest use it to attack the TPM quote parser without a TPM.
//! Usage: cargo run -p rapha-attest --example record_tpm_fixture -- crates/rapha-attest/testdata/tpm
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a tool: a panic is a failure

use std::collections::BTreeSet;
use std::path::PathBuf;

use rapha_attest::tpm::{connect, enroll_ak, record_pcr_policy, TpmAttester, VendorRoots};
use rapha_core::Digest;
use rapha_testkit::services::Swtpm;

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("output directory"));
    std::fs::create_dir_all(&out).unwrap();
    let tpm = rapha_testkit::require!(Swtpm::start_provisioned()).expect("swtpm is required");
    let ca = tpm.ek_ca_cert_pem().unwrap();
    let roots = VendorRoots::from_pem_file(ca).unwrap();
    let selection: BTreeSet<u8> = [0, 1, 2, 3, 4, 7, 14].into_iter().collect();
    let mut ctx = connect(&tpm.tcti()).unwrap();
    let certified = enroll_ak(&mut ctx, &roots).unwrap();
    let policy = record_pcr_policy(&mut ctx, &selection).unwrap();
    drop(ctx);
    let binding = Digest::of(b"rapha fixture job");
    let ev = TpmAttester::open(&tpm.tcti(), certified.clone())
        .unwrap()
        .quote(&selection, &binding)
        .unwrap();
    std::fs::copy(ca, out.join("ek_ca.pem")).unwrap();
    let json = |v: &dyn erased::Ser| v.to_json();
    std::fs::write(out.join("ak_record.json"), json(&certified.record())).unwrap();
    std::fs::write(out.join("pcr_policy.json"), json(&policy)).unwrap();
    std::fs::write(out.join("evidence.json"), json(&ev)).unwrap();
    std::fs::write(out.join("binding.txt"), binding.to_hex()).unwrap();
    println!("wrote {}", out.display());
}

mod erased {
    pub trait Ser {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> String {
            serde_json::to_string_pretty(self).unwrap()
        }
    }
}
