//! Compiles the C and C++ side of the worker (csrc/codecs.c against CharLS and GDCM's 12-bit IJG
//! library, Debian libcharls-dev and libgdcm-dev; csrc/htj2k.cpp against OpenJPH, Debian
//! libopenjph-dev) and links them into the worker binary only: the library half of this crate,
//! which the node links, carries no C or C++ code.

fn main() {
    println!("cargo::rerun-if-changed=csrc/codecs.c");
    println!("cargo::rerun-if-changed=csrc/htj2k.cpp");
    let ijg12 = std::env::var("RAPHA_IJG12_INCLUDE")
        .unwrap_or_else(|_| "/usr/include/gdcm-3.0/gdcmjpeg/12".to_owned());
    cc::Build::new()
        .file("csrc/codecs.c")
        .include(&ijg12)
        .warnings(true)
        .extra_warnings(true)
        .cargo_metadata(false)
        .compile("rapha_decode_codecs");
    cc::Build::new()
        .cpp(true)
        .file("csrc/htj2k.cpp")
        .std("c++14")
        .warnings(true)
        .extra_warnings(true)
        .cargo_metadata(false)
        .compile("rapha_decode_htj2k");
    let out = std::env::var("OUT_DIR").unwrap_or_default();
    println!("cargo::rustc-link-arg-bins=-L{out}");
    for lib in [
        "rapha_decode_codecs",
        "rapha_decode_htj2k",
        "charls",
        "gdcmjpeg12",
        "openjph",
        "stdc++",
    ] {
        println!("cargo::rustc-link-arg-bins=-l{lib}");
    }
}
