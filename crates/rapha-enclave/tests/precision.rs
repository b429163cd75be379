//! Precision and noise the DPO chooses (**I4**, issue 19 item 3): the node rounds and noises
//! the declared float tensors after the guard accepts, and what leaves (and what the receipt's
//! digest covers) is the rounded, noised file in the released dtype.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rapha_core::release::{NoiseK, ReleasePrecision, ReleaseTransform, TensorDecl, TensorDtype};
use rapha_core::{Digest, OutputDecl, OutputKind};
use rapha_enclave::fingerprint::Fingerprints;
use rapha_enclave::formats;
use rapha_enclave::guard::release::{released_values, transform_tensor};
use rapha_enclave::guard::Guard;
use rapha_enclave::RawIdentifiers;

fn at(precision: ReleasePrecision, k: f64) -> ReleaseTransform {
    ReleaseTransform {
        precision,
        noise_k: NoiseK::try_from(k).unwrap(),
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::from_seed([7; 32])
}

fn decls(n: u64) -> Vec<OutputDecl> {
    vec![OutputDecl {
        name: "model.safetensors".into(),
        kind: OutputKind::Safetensors,
        max_bytes: 1 << 20,
        tensors: vec![
            TensorDecl {
                name: "w".into(),
                dtype: TensorDtype::F32,
                shape: vec![n],
            },
            TensorDecl {
                name: "steps".into(),
                dtype: TensorDtype::I64,
                shape: vec![1],
            },
        ],
    }]
}

/// A trainer's safetensors file of `w` (F32) and `steps` (I64), written its own way.
fn trainer_file(w: &[f32]) -> Vec<u8> {
    let wb = f32s(w);
    let hdr = format!(
        r#"{{"w": {{"dtype": "F32", "shape": [{}], "data_offsets": [0, {}]}}, "steps": {{"dtype": "I64", "shape": [1], "data_offsets": [{}, {}]}}}}"#,
        w.len(),
        wb.len(),
        wb.len(),
        wb.len() + 8
    );
    let mut out = (hdr.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(hdr.as_bytes());
    out.extend_from_slice(&wb);
    out.extend_from_slice(&42i64.to_le_bytes());
    out
}

/// The released file's tensors: name → (dtype, shape, bytes).
fn tensors(file: &[u8]) -> Vec<(String, String, Vec<u64>, Vec<u8>)> {
    let parsed = formats::parse_safetensors(file).unwrap();
    let data = &file[formats::safetensors_data_start(file)..];
    parsed
        .into_iter()
        .map(|t| {
            let bytes = data[t.start as usize..t.end as usize].to_vec();
            (t.name, t.dtype, t.shape, bytes)
        })
        .collect()
}

/// Runs the guard and the node's release at `transform` on a trainer's file of `w`.
fn release(w: &[f32], transform: ReleaseTransform) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), trainer_file(w)).unwrap();
    let decls = decls(w.len() as u64);
    let searcher = RawIdentifiers::new().searcher().unwrap();
    let fingerprints = Fingerprints::default();
    let guard = Guard {
        outputs: &decls,
        total_cap: 2 << 20,
        identifiers: &searcher,
        fingerprints: &fingerprints,
    };
    let verdict = guard.check(dir.path(), &[]);
    assert!(verdict.accepted, "{:?}", verdict.rejections);
    let (verdict, mut bytes) = guard.release_at(dir.path(), verdict, transform);
    assert!(verdict.accepted, "{:?}", verdict.rejections);
    let out = bytes.remove(0);
    assert_eq!(
        verdict.files[0].digest,
        Digest::of(&out),
        "the digest is of the released bytes"
    );
    assert_eq!(verdict.files[0].size, out.len() as u64);
    out
}

fn bf16_values(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
        .collect()
}

fn f32_values(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn bf16_leaves_in_bf16_rounded_to_nearest_even_and_saturated() {
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1. 1 + 3·2^-8 ties to
    // 1 + 2^-6 (even). f32::MAX is past bf16's largest finite value: saturated, not infinite.
    let w = [
        1.0,
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        -2.5,
        f32::MAX,
        1e-40,
    ];
    let out = release(&w, at(ReleasePrecision::Bf16, 0.0));
    let t = tensors(&out);
    assert_eq!(t[0].0, "steps");
    assert_eq!(
        (t[0].1.as_str(), t[0].3.clone()),
        ("I64", 42i64.to_le_bytes().to_vec())
    );
    assert_eq!((t[1].0.as_str(), t[1].1.as_str()), ("w", "BF16"));
    let v = bf16_values(&t[1].3);
    assert_eq!(&v[..4], &[1.0, 1.0, 1.0 + 2f32.powi(-6), -2.5]);
    assert_eq!(v[4].to_bits() >> 16, 0x7f7f, "the largest finite bf16");
    // 1e-40 is a subnormal f32; bf16 keeps its nearest subnormal (7 significant bits).
    assert!(
        (v[5] - 1e-40).abs() <= f32::from_bits(0x0001_0000),
        "{}",
        v[5]
    );
    // Half the bytes of the declared F32 for the weights.
    assert_eq!(t[1].3.len(), 12);
}

#[test]
fn fp16_leaves_in_fp16_saturated_and_int8_with_its_scale() {
    let w = [0.1, 65520.0, -1e9, 3e-8];
    let out = release(&w, at(ReleasePrecision::Fp16, 0.0));
    let t = tensors(&out);
    assert_eq!((t[1].0.as_str(), t[1].1.as_str()), ("w", "F16"));
    let h: Vec<u16> = t[1]
        .3
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    // 0.1 → 0x2e66; 65520 (halfway to 65536, which is infinite) and -1e9 saturate; 3e-8 is
    // the subnormal 2^-25 ≈ 2.98e-8 rounded up to 2^-24 (0x0001).
    assert_eq!(h, vec![0x2e66, 0x7bff, 0xfbff, 0x0001]);

    let w = [0.5, -1.27, 0.0, 0.01];
    let out = release(&w, at(ReleasePrecision::Int8, 0.0));
    let t = tensors(&out);
    let names: Vec<&str> = t.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(names, ["steps", "w", "w:scale"]);
    assert_eq!((t[1].1.as_str(), t[1].2.clone()), ("I8", vec![4]));
    assert_eq!((t[2].1.as_str(), t[2].2.clone()), ("F32", vec![]));
    let scale = f32_values(&t[2].3)[0];
    assert_eq!(scale, (f64::from(1.27f32) / 127.0) as f32);
    let q: Vec<i8> = t[1].3.iter().map(|&b| b as i8).collect();
    assert_eq!(q, vec![50, -127, 0, 1]);

    // An all-zero tensor: zeros, scale 0.
    let out = release(&[0.0; 3], at(ReleasePrecision::Int8, 0.0));
    let t = tensors(&out);
    assert_eq!(t[1].3, vec![0; 3]);
    assert_eq!(f32_values(&t[2].3), vec![0.0]);
}

#[test]
fn node_noise_has_the_policy_sigma_and_differs_between_releases() {
    // A tensor of 20,000 values, RMS 1 (alternating ±1 and 0 would be RMS 0.8; here ±1).
    let w: Vec<f32> = (0..20_000)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let first = release(&w, at(ReleasePrecision::Declared, 0.1));
    let second = release(&w, at(ReleasePrecision::Declared, 0.1));
    assert_ne!(
        first, second,
        "the node's generator is seeded afresh, not by the job"
    );
    let t = tensors(&first);
    assert_eq!(t[1].1, "F32");
    assert_eq!(
        t[0].3,
        42i64.to_le_bytes().to_vec(),
        "integer tensors are not noised"
    );
    let v = f32_values(&t[1].3);
    let diffs: Vec<f64> = v.iter().zip(&w).map(|(a, b)| f64::from(a - b)).collect();
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let sd = (diffs.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / n).sqrt();
    // σ = 0.1 × RMS(w) = 0.1; the sample sd of 20,000 draws is within 3% of it.
    assert!((sd - 0.1).abs() < 0.003, "sd {sd}");
    assert!(mean.abs() < 0.003, "mean {mean}");
    // Noise then bf16: the values are bf16 and not the trainer's.
    let out = release(&w, at(ReleasePrecision::Bf16, 0.3));
    let v = bf16_values(&tensors(&out)[1].3);
    assert!(v.iter().zip(&w).filter(|(a, b)| a != b).count() > 19_000);
}

#[test]
fn no_noise_or_rounding_makes_a_value_non_finite() {
    // Values at the edge of each range and the largest noise the policy allows.
    for p in ReleasePrecision::ALL {
        let w = [f32::MAX, -f32::MAX, f32::MIN_POSITIVE, 0.0];
        let out = release(&w, at(p, rapha_core::release::MAX_NOISE_K));
        for (_, dtype, _, bytes) in tensors(&out) {
            match dtype.as_str() {
                "F32" => assert!(f32_values(&bytes).iter().all(|x| x.is_finite())),
                "BF16" => assert!(bf16_values(&bytes).iter().all(|x| x.is_finite())),
                "F16" => assert!(bytes
                    .chunks_exact(2)
                    .all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 != 0x7c00)),
                "I8" | "I64" => {}
                other => panic!("{other}"),
            }
        }
    }
    // F64 past f32's range, with noise, released as F64.
    let big = f64::MAX / 2.0;
    let t = transform_tensor(
        TensorDtype::F64,
        &[big.to_le_bytes(), (-big).to_le_bytes()].concat(),
        at(ReleasePrecision::Declared, 100.0),
        &mut rng(),
    );
    assert!(t
        .bytes
        .chunks_exact(8)
        .all(|c| f64::from_le_bytes(c.try_into().unwrap()).is_finite()));
}

#[test]
fn every_half_and_bfloat_value_is_kept_exactly() {
    // Rounding a value already representable changes nothing, for all 2^16 patterns that
    // are finite (the exponent not all ones).
    for (dtype, p, inf) in [
        (TensorDtype::F16, ReleasePrecision::Fp16, 0x7c00u16),
        (TensorDtype::BF16, ReleasePrecision::Bf16, 0x7f80u16),
    ] {
        let bytes: Vec<u8> = (0..=u16::MAX)
            .filter(|h| h & inf != inf)
            .flat_map(u16::to_le_bytes)
            .collect();
        let t = transform_tensor(dtype, &bytes, at(p, 0.0), &mut rng());
        assert_eq!(t.dtype, dtype);
        assert_eq!(t.bytes, bytes, "{dtype:?}");
    }
}

proptest::proptest! {
    #[test]
    fn bf16_is_the_nearest_even_of_the_f32(bits in 0u32..0x7f7f_ffff, neg: bool) {
        let x = f32::from_bits(bits | if neg { 0x8000_0000 } else { 0 });
        let t = transform_tensor(
            TensorDtype::F32, &x.to_le_bytes(), at(ReleasePrecision::Bf16, 0.0), &mut rng(),
        );
        let got = u16::from_le_bytes([t.bytes[0], t.bytes[1]]);
        // The reference rounding of the upper 16 bits (ties to even), saturated.
        let b = x.to_bits();
        let mut want = ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16;
        if want & 0x7f80 == 0x7f80 {
            want -= 1;
        }
        proptest::prop_assert_eq!(got, want);
    }

    #[test]
    fn fp16_is_a_nearest_half(x in -70000f32..70000f32) {
        let t = transform_tensor(
            TensorDtype::F32, &x.to_le_bytes(), at(ReleasePrecision::Fp16, 0.0), &mut rng(),
        );
        let h = u16::from_le_bytes([t.bytes[0], t.bytes[1]]);
        let got = half(h);
        let err = (f64::from(x) - got).abs();
        // Neither neighbour is nearer (saturated values excepted).
        if got.abs() < 65504.0 {
            for n in [h.wrapping_add(1), h.wrapping_sub(1)] {
                if n & 0x7c00 != 0x7c00 && (n ^ h) & 0x8000 == 0 {
                    proptest::prop_assert!(err <= (f64::from(x) - half(n)).abs());
                }
            }
        } else {
            proptest::prop_assert_eq!(got.abs(), 65504.0);
        }
    }
}

/// The value of IEEE half bits, as a publisher reads the released file.
fn half(h: u16) -> f64 {
    released_values(TensorDtype::F16, &h.to_le_bytes(), None).unwrap()[0]
}
