//! Anatomy-like synthetic images with an optional low-contrast "lesion".
//!
//! Intensities are in [0, 1] "tissue units" before a modality maps them to stored values:
//! air ≈ 0.02, soft tissue ≈ 0.35 with large smooth "organs" (±0.03–0.10 each, σ 16–30 % of
//! the side, ±0.12 at most in sum), a few bright "bones" (≥ 0.76, peak 0.85–0.97) that always
//! hold the image maximum, Gaussian noise σ 0.018–0.025, and for a
//! positive study a lobulated blob of radius 7–12 % of the side and contrast 0.09–0.13: a
//! pixel contrast-to-noise of about 3–6, invisible to the image max and lost in the image mean,
//! but plain to a detector that averages over the lesion's scale away from bone.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub(crate) struct Ellipse {
    pub cx: f32,
    pub cy: f32,
    pub ax: f32,
    pub ay: f32,
    pub angle: f32,
}

impl Ellipse {
    /// Normalised radius of (x, y): < 1 inside.
    fn radius(&self, x: f32, y: f32) -> f32 {
        let (s, c) = self.angle.sin_cos();
        let dx = x - self.cx;
        let dy = y - self.cy;
        let u = (dx * c + dy * s) / self.ax;
        let v = (-dx * s + dy * c) / self.ay;
        (u * u + v * v).sqrt()
    }
}

#[derive(Debug, Clone)]
struct Blob {
    cx: f32,
    cy: f32,
    sigma: f32,
    amp: f32,
}

/// The per-series anatomy (each instance jitters it slightly, like neighbouring slices).
#[derive(Debug, Clone)]
pub(crate) struct Anatomy {
    side: f32,
    body: Ellipse,
    organs: Vec<Blob>,
    bones: Vec<(Ellipse, f32)>,
    noise: f32,
}

/// Where the lesion of a positive study sits (per study; instances jitter it).
#[derive(Debug, Clone)]
pub(crate) struct Lesion {
    pub cx: f32,
    pub cy: f32,
    pub radius: f32,
    pub ratio: f32,
    pub angle: f32,
    pub lobes: f32,
    pub phase: f32,
    pub amp: f32,
}

fn u(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    rng.gen_range(lo..hi)
}

pub(crate) fn anatomy(rng: &mut ChaCha8Rng, side: usize) -> Anatomy {
    let s = side as f32;
    let body = Ellipse {
        cx: s * u(rng, 0.46, 0.54),
        cy: s * u(rng, 0.47, 0.55),
        ax: s * u(rng, 0.36, 0.46),
        ay: s * u(rng, 0.32, 0.44),
        angle: u(rng, -0.2, 0.2),
    };
    let n_organs = rng.gen_range(4..8);
    let organs = (0..n_organs)
        .map(|_| {
            let a = u(rng, 0.0, std::f32::consts::TAU);
            let r = u(rng, 0.0, 0.7);
            Blob {
                cx: body.cx + a.cos() * r * body.ax,
                cy: body.cy + a.sin() * r * body.ay,
                sigma: s * u(rng, 0.16, 0.30),
                amp: u(rng, 0.03, 0.10) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 },
            }
        })
        .collect();
    // A "spine" near the back and 1–3 "ribs"/"limb bones" near the edge of the body.
    let mut bones = vec![(
        Ellipse {
            cx: body.cx + s * u(rng, -0.03, 0.03),
            cy: body.cy + body.ay * u(rng, 0.55, 0.75),
            ax: s * u(rng, 0.04, 0.07),
            ay: s * u(rng, 0.035, 0.06),
            angle: u(rng, -0.3, 0.3),
        },
        u(rng, 0.85, 0.97),
    )];
    for _ in 0..rng.gen_range(1..4) {
        let a = u(rng, 0.0, std::f32::consts::TAU);
        let r = u(rng, 0.75, 0.9);
        bones.push((
            Ellipse {
                cx: body.cx + a.cos() * r * body.ax,
                cy: body.cy + a.sin() * r * body.ay,
                ax: s * u(rng, 0.05, 0.12),
                ay: s * u(rng, 0.012, 0.025),
                angle: a + std::f32::consts::FRAC_PI_2 + u(rng, -0.3, 0.3),
            },
            u(rng, 0.85, 0.97),
        ));
    }
    Anatomy {
        side: s,
        body,
        organs,
        bones,
        noise: u(rng, 0.018, 0.025),
    }
}

/// A lesion inside the body, away from bone, radius 7–12 % of the side.
pub(crate) fn lesion(rng: &mut ChaCha8Rng, anat: &Anatomy) -> Lesion {
    let s = anat.side;
    let radius = s * u(rng, 0.07, 0.12);
    let mut best = None;
    for _ in 0..200 {
        let a = u(rng, 0.0, std::f32::consts::TAU);
        let r = u(rng, 0.0, 0.5);
        let cx = anat.body.cx + a.cos() * r * anat.body.ax;
        let cy = anat.body.cy + a.sin() * r * anat.body.ay;
        let clear = anat.bones.iter().all(|(b, _)| {
            let d = ((cx - b.cx).powi(2) + (cy - b.cy).powi(2)).sqrt();
            d > 2.2 * radius + b.ax.max(b.ay)
        });
        best = Some((cx, cy));
        if clear {
            break;
        }
    }
    let (cx, cy) = best.unwrap_or((anat.body.cx, anat.body.cy));
    Lesion {
        cx,
        cy,
        radius,
        ratio: u(rng, 0.6, 1.0),
        angle: u(rng, 0.0, std::f32::consts::PI),
        lobes: f32::from(rng.gen_range(2u8..6)),
        phase: u(rng, 0.0, std::f32::consts::TAU),
        amp: u(rng, 0.09, 0.13),
    }
}

/// Standard normal by Box–Muller (the workspace carries no `rand_distr`).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Renders one instance: the anatomy jittered a little, the lesion (jittered in position and
/// size) if any, and fresh noise.
pub(crate) fn render(
    rng: &mut ChaCha8Rng,
    anat: &Anatomy,
    lesion: Option<&Lesion>,
    width: usize,
    height: usize,
) -> Vec<f32> {
    let s = anat.side;
    let jx = s * u(rng, -0.015, 0.015);
    let jy = s * u(rng, -0.015, 0.015);
    let scale = u(rng, 0.97, 1.03);
    let les = lesion.map(|l| Lesion {
        cx: l.cx + jx + s * u(rng, -0.02, 0.02),
        cy: l.cy + jy + s * u(rng, -0.02, 0.02),
        radius: l.radius * u(rng, 0.9, 1.1),
        ..l.clone()
    });
    let body = Ellipse {
        cx: anat.body.cx + jx,
        cy: anat.body.cy + jy,
        ax: anat.body.ax * scale,
        ay: anat.body.ay * scale,
        angle: anat.body.angle,
    };
    let organs: Vec<(f32, f32, f32, f32)> = anat
        .organs
        .iter()
        .map(|o| (o.cx + jx, o.cy + jy, 1.0 / (2.0 * o.sigma * o.sigma), o.amp))
        .collect();
    let bones: Vec<(Ellipse, f32)> = anat
        .bones
        .iter()
        .map(|(b, v)| {
            (
                Ellipse {
                    cx: b.cx + jx,
                    cy: b.cy + jy,
                    ..b.clone()
                },
                *v,
            )
        })
        .collect();
    let mut img = vec![0f32; width * height];
    for y in 0..height {
        let fy = y as f32 + 0.5;
        for x in 0..width {
            let fx = x as f32 + 0.5;
            let rb = body.radius(fx, fy);
            // Soft body edge over a few pixels.
            let inside = 1.0 / (1.0 + ((rb - 1.0) * 40.0).exp());
            let mut organ = 0.0;
            for &(cx, cy, k, amp) in &organs {
                let d2 = (fx - cx).powi(2) + (fy - cy).powi(2);
                organ += amp * (-d2 * k).exp();
            }
            // Soft tissue stays well below bone, so bone always holds the maximum.
            let mut t = 0.35 + organ.clamp(-0.12, 0.12);
            if let Some(l) = &les {
                let (sn, cs) = l.angle.sin_cos();
                let dx = fx - l.cx;
                let dy = fy - l.cy;
                let uu = dx * cs + dy * sn;
                let vv = (-dx * sn + dy * cs) / l.ratio;
                let theta = vv.atan2(uu);
                let r = l.radius * (1.0 + 0.15 * (l.lobes * theta + l.phase).sin());
                let e2 = (uu * uu + vv * vv) / (r * r);
                if e2 < 1.0 {
                    t += l.amp * (1.0 - e2).powf(0.75);
                }
            }
            let mut v = 0.02 + (t - 0.02) * inside;
            for (b, level) in &bones {
                let rr = b.radius(fx, fy);
                if rr < 1.0 {
                    v = v.max(level * (0.9 + 0.1 * (1.0 - rr * rr)));
                }
            }
            img[y * width + x] = v + anat.noise * normal(rng);
        }
    }
    img
}

/// Ultrasound-like: a sector of speckle with a few dark "vessels", no lesion.
pub(crate) fn ultrasound(rng: &mut ChaCha8Rng, width: usize, height: usize) -> Vec<f32> {
    let apex_x = width as f32 / 2.0;
    let half_angle = u(rng, 0.55, 0.75);
    let depth = height as f32 * 0.95;
    let vessels: Vec<(f32, f32, f32)> = (0..rng.gen_range(1..4))
        .map(|_| {
            (
                u(rng, 0.3, 0.7) * width as f32,
                u(rng, 0.3, 0.8) * height as f32,
                u(rng, 0.03, 0.08) * width as f32,
            )
        })
        .collect();
    let mut img = vec![0f32; width * height];
    for y in 0..height {
        for x in 0..width {
            let dx = x as f32 - apex_x;
            let dy = y as f32 + 4.0;
            let r = (dx * dx + dy * dy).sqrt();
            let a = dx.atan2(dy).abs();
            if a > half_angle || r > depth {
                continue;
            }
            let mut level = 0.45 * (1.0 - 0.5 * r / depth);
            for &(vx, vy, vr) in &vessels {
                if (x as f32 - vx).powi(2) + (y as f32 - vy).powi(2) < vr * vr {
                    level *= 0.15;
                }
            }
            let speckle = normal(rng).abs() * 0.8;
            img[y * width + x] = level * speckle;
        }
    }
    img
}
