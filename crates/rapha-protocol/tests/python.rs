use rapha_protocol::python::{module, MODULE_PATH};

/// The Python SDK's constants are this crate's: the committed module is the generated text,
/// so a change to a limit, a dtype or the metrics schema that is not carried to the Python
/// SDK fails here (regenerate with the example named in the message).
#[test]
fn committed_python_constants_are_the_generated_module() {
    // The crate's directory as cargo gives it to the running test, so a test binary reused
    // from a build in another checkout still reads this checkout's file.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    );
    let path = dir.join("../..").join(MODULE_PATH);
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        committed == module(),
        "{MODULE_PATH} is not the generated module; regenerate it with \
         `cargo run -p rapha-protocol --example python_constants > {MODULE_PATH}`"
    );
}

#[test]
fn python_module_carries_every_limit_dtype_and_metrics_key() {
    let m = module();
    for line in [
        "PROTOCOL_VERSION = 1\n",
        "SOCKET_PATH_IN_CONTAINER = \"/rapha/data.sock\"\n",
        "MAX_RESPONSE_HEADER = 4194304\n",
        "MAX_PAYLOAD = 536870912\n",
        "MAX_IN_FLIGHT = 16\n",
        "MAX_PAGE = 1000\n",
        "MAX_CURVE = 10000\n",
        "    \"u16\": \"<u2\",\n",
        "    \"i16\": \"<i2\",\n",
        "    \"f32\": \"<f4\",\n",
        "SPLITS = (\"train\", \"validation\")\n",
        "    \"val_loss_curve\",\n",
    ] {
        assert!(m.contains(line), "{line:?} missing from\n{m}");
    }
    assert_eq!(m.matches("_curve\",\n").count(), 3);
}

/// The module is valid Python that the standard library alone can load, and what it holds is
/// this crate's values (skipped only where no Python is installed and services are optional).
#[test]
fn python_module_loads_with_the_crates_values() {
    let python = std::env::var("RAPHA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import json, sys\nns = {}\nexec(sys.stdin.read(), ns)\n\
        print(json.dumps({k: v for k, v in ns.items() if k.isupper()}))";
    let child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                !std::env::var("RAPHA_REQUIRE_SERVICES").is_ok_and(|v| v == "1"),
                "{python} is required: {e}"
            );
            eprintln!("SKIPPED: no {python}");
            return;
        }
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(module().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["PROTOCOL_VERSION"], rapha_protocol::PROTOCOL_VERSION);
    assert_eq!(v["MAX_PAYLOAD"], rapha_protocol::MAX_PAYLOAD);
    assert_eq!(v["MAX_REQUEST_HEADER"], rapha_protocol::MAX_REQUEST_HEADER);
    assert_eq!(
        v["MAX_RESPONSE_HEADER"],
        rapha_protocol::MAX_RESPONSE_HEADER
    );
    assert_eq!(v["MAX_IN_FLIGHT"], rapha_protocol::MAX_IN_FLIGHT);
    assert_eq!(v["MAX_PAGE"], rapha_protocol::MAX_PAGE);
    assert_eq!(v["MAX_CURVE"], rapha_protocol::MAX_CURVE);
    assert_eq!(v["SOCKET_ENV"], rapha_protocol::SOCKET_ENV);
    assert_eq!(
        v["METRICS_KEYS"],
        serde_json::json!(rapha_protocol::METRICS_KEYS)
    );
    let dtypes: Vec<&str> = rapha_protocol::Dtype::ALL
        .iter()
        .map(|d| d.name())
        .collect();
    let keys: Vec<&str> = v["DTYPES"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = dtypes.clone();
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(v["SPLITS"], serde_json::json!(["train", "validation"]));
    assert_eq!(v["ERROR_CODES"].as_array().unwrap().len(), 8);
}
