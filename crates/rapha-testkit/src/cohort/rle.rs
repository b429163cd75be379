//! RLE Lossless (transfer syntax 1.2.840.10008.1.2.5) encoder, as PS3.5 Annex G describes:
//! one segment per byte plane (most significant byte first, per sample), each row PackBits-
//! encoded on its own, a 64-byte header of segment offsets, one fragment per frame.

/// Encodes one frame of native little-endian pixel bytes (`samples` samples per pixel,
/// `bytes_per_sample` bytes each, interleaved by pixel) into an RLE fragment.
pub(crate) fn encode_frame(
    pixels: &[u8],
    rows: usize,
    cols: usize,
    samples: usize,
    bytes_per_sample: usize,
) -> Vec<u8> {
    let n_segments = samples * bytes_per_sample;
    debug_assert!(n_segments <= 15);
    debug_assert_eq!(pixels.len(), rows * cols * n_segments);
    let stride = n_segments;
    let mut segments = Vec::with_capacity(n_segments);
    let mut row = vec![0u8; cols];
    for s in 0..samples {
        // Most significant byte first: byte index (bytes_per_sample - 1) of a LE sample.
        for b in (0..bytes_per_sample).rev() {
            let offset = s * bytes_per_sample + b;
            let mut seg = Vec::new();
            for r in 0..rows {
                for (c, v) in row.iter_mut().enumerate() {
                    *v = pixels[(r * cols + c) * stride + offset];
                }
                packbits(&row, &mut seg);
            }
            if seg.len() % 2 == 1 {
                seg.push(0);
            }
            segments.push(seg);
        }
    }
    let mut out = Vec::with_capacity(64 + segments.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(n_segments as u32).to_le_bytes());
    let mut offset = 64u32;
    for i in 0..15 {
        match segments.get(i) {
            Some(seg) => {
                out.extend_from_slice(&offset.to_le_bytes());
                offset += seg.len() as u32;
            }
            None => out.extend_from_slice(&0u32.to_le_bytes()),
        }
    }
    for seg in &segments {
        out.extend_from_slice(seg);
    }
    out
}

/// PackBits: header n in 0..=127 → n+1 literal bytes; n in -127..=-1 → next byte repeated
/// 1-n times. Runs of 3+ equal bytes are replicated, the rest literal; nothing crosses the end
/// of `data` (one row).
pub(crate) fn packbits(data: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < data.len() {
        let mut run = 1;
        while i + run < data.len() && run < 128 && data[i + run] == data[i] {
            run += 1;
        }
        if run >= 3 {
            out.push((257 - run) as u8);
            out.push(data[i]);
            i += run;
            continue;
        }
        // Literal: extend until a run of 3 starts or 128 bytes.
        let start = i;
        let mut j = i;
        while j < data.len() && j - start < 128 {
            if j + 2 < data.len() && data[j] == data[j + 1] && data[j] == data[j + 2] {
                break;
            }
            j += 1;
        }
        out.push((j - start - 1) as u8);
        out.extend_from_slice(&data[start..j]);
        i = j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent decoder, straight from the PackBits definition.
    fn unpack(mut data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some((&h, rest)) = data.split_first() {
            let h = h as i8;
            if h >= 0 {
                let n = (h as usize + 1).min(rest.len());
                out.extend_from_slice(&rest[..n]);
                data = &rest[n..];
            } else if h != -128 {
                let Some(&b) = rest.first() else { break };
                out.extend(std::iter::repeat_n(b, (1 - h as isize) as usize));
                data = &rest[1..];
            } else {
                data = rest;
            }
        }
        out
    }

    #[test]
    fn packbits_round_trips_runs_literals_and_long_rows() {
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![7],
            vec![1, 2],
            vec![5; 300],
            (0..=255).collect(),
            vec![1, 1, 2, 2, 2, 3, 1, 1, 1, 1, 9],
        ];
        let mut x = 12345u32;
        cases.push(
            (0..1000)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    ((x >> 16) % 4) as u8
                })
                .collect(),
        );
        for c in cases {
            let mut enc = Vec::new();
            packbits(&c, &mut enc);
            assert_eq!(unpack(&enc), c);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn packbits_round_trips_any_row(
            row in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            runs in proptest::collection::vec(0u8..4, 0..600),
        ) {
            // Mix random bytes with long runs so both header kinds and the 128 limit occur.
            let data: Vec<u8> = row.iter().zip(&runs).flat_map(|(&b, &r)| {
                std::iter::repeat_n(b, if r == 0 { 1 } else { usize::from(r) * 50 })
            }).collect();
            let mut enc = Vec::new();
            packbits(&data, &mut enc);
            proptest::prop_assert_eq!(unpack(&enc), data);
        }
    }

    #[test]
    fn frame_header_lists_msb_segment_first() {
        // 1×2 pixels of 16-bit: 0x0102, 0x0304 (little-endian bytes).
        let enc = encode_frame(&[0x02, 0x01, 0x04, 0x03], 1, 2, 1, 2);
        assert_eq!(u32::from_le_bytes(enc[0..4].try_into().unwrap()), 2);
        let o1 = u32::from_le_bytes(enc[4..8].try_into().unwrap()) as usize;
        let o2 = u32::from_le_bytes(enc[8..12].try_into().unwrap()) as usize;
        assert_eq!(o1, 64);
        assert_eq!(&unpack(&enc[o1..o2])[..2], &[0x01, 0x03]);
        assert_eq!(&unpack(&enc[o2..])[..2], &[0x02, 0x04]);
        assert_eq!(enc.len() % 2, 0);
    }
}
