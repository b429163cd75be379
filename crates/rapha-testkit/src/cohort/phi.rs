//! Synthetic identities: every value here is PHI-shaped and recorded in the manifest.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const LAST: &[&str] = &[
    "ANDERSEN",
    "BAPTISTE",
    "CARVALHO",
    "DUBOIS",
    "EKSTROM",
    "FONTAINE",
    "GALLAGHER",
    "HOFFMANN",
    "IVANOVA",
    "JANSSEN",
    "KOWALSKI",
    "LINDQVIST",
    "MORETTI",
    "NAKAMURA",
    "OKONKWO",
    "PETERSEN",
    "QUINTERO",
    "ROSSETTI",
    "SCHNEIDER",
    "TANAKA",
    "UCHENNA",
    "VASQUEZ",
    "WOJCIK",
    "XAVIER",
    "YILMAZ",
    "ZIMMERMANN",
    "BRENNAN",
    "CASTELLANOS",
    "DELACROIX",
    "FITZGERALD",
];
const FIRST: &[&str] = &[
    "AMELIA",
    "BENEDIKT",
    "CLARISSA",
    "DMITRI",
    "ELEONORA",
    "FABIAN",
    "GRETA",
    "HENRIK",
    "INGRID",
    "JOAQUIN",
    "KATARINA",
    "LEOPOLD",
    "MARGUERITE",
    "NIKOLAI",
    "OTTILIE",
    "PRIYANKA",
    "RAFAEL",
    "SOLVEIG",
    "THEODOR",
    "URSULA",
    "VALENTIN",
    "WILHELMINA",
    "YOLANDA",
    "ZACHARIAS",
];
const INSTITUTIONS: &[(&str, &str)] = &[
    (
        "SAINT BRENDAN GENERAL HOSPITAL",
        "14 Harbour Quay, Port Elmsworth",
    ),
    (
        "NORTHFIELD UNIVERSITY CLINIC",
        "220 Linden Avenue, Northfield",
    ),
    (
        "RIVERSIDE MEMORIAL MEDICAL CENTRE",
        "3 Mill Lane, Ashbourne-on-Wye",
    ),
];

#[derive(Debug, Clone)]
pub(crate) struct Patient {
    pub id: String,
    pub name: String,
    pub given: String,
    pub family: String,
    pub other_id: String,
    pub issuer: String,
    pub birth_date: String,
    pub sex: &'static str,
    pub birth_year: u32,
    pub institution: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Staff {
    pub referring: String,
    pub operator: String,
    pub station: String,
}

fn pick<'a>(rng: &mut ChaCha8Rng, list: &[&'a str]) -> &'a str {
    list.choose(rng).copied().unwrap_or("DOE")
}

pub(crate) fn patient(rng: &mut ChaCha8Rng, index: usize) -> Patient {
    let family = pick(rng, LAST).to_owned();
    let given = pick(rng, FIRST).to_owned();
    let middle = pick(rng, FIRST);
    let birth_year = rng.gen_range(1931..2006);
    let birth_date = format!(
        "{birth_year:04}{:02}{:02}",
        rng.gen_range(1..13u32),
        rng.gen_range(1..29u32)
    );
    let institution = rng.gen_range(0..INSTITUTIONS.len());
    Patient {
        // The index makes ids unique within a cohort whatever the random draws.
        id: format!("MRN{:04}{:05}", index, rng.gen_range(0..100_000u32)),
        name: format!("{family}^{given}^{}", &middle[..1]),
        given,
        family,
        other_id: format!("NHS{:09}", rng.gen_range(0..1_000_000_000u32)),
        issuer: format!("{}-MPI", institution_code(institution)),
        birth_date,
        sex: if rng.gen_bool(0.5) { "F" } else { "M" },
        birth_year,
        institution,
    }
}

pub(crate) fn institution(i: usize) -> (&'static str, &'static str) {
    INSTITUTIONS[i % INSTITUTIONS.len()]
}

fn institution_code(i: usize) -> &'static str {
    ["SBGH", "NUC", "RMMC"][i % 3]
}

pub(crate) fn staff(rng: &mut ChaCha8Rng, institution: usize, modality: &str) -> Staff {
    Staff {
        referring: format!("{}^{}^^DR", pick(rng, LAST), pick(rng, FIRST)),
        operator: format!("{}^{}", pick(rng, LAST), pick(rng, FIRST)),
        station: format!(
            "{}{}-{:02}",
            institution_code(institution),
            modality,
            rng.gen_range(1..20)
        ),
    }
}
