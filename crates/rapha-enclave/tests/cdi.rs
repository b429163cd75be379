//! GPUs from CDI specs (issue 16, item 5): the runc spec a GPU job gets from a spec in the form
//! `nvidia-ctk cdi generate` writes, that a job which declared no GPU gets nothing of it, and
//! the specs and names the node refuses.
//!
//! This machine has no GPU: the sample spec's device nodes are described to
//! [`GpuDevices::resolve_with`] by a table of the numbers a two-GPU host has; the probe of the
//! real host ([`GpuDevices::resolve`]) is run on the machine's ordinary device nodes. No GPU
//! job has been run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rapha_core::ResourceLimits;
use rapha_enclave::cdi::{CdiError, GpuDevices, NodeInfo};
use rapha_enclave::sandbox::{oci_spec, LaunchSpec, SandboxConfig};
use rapha_enclave::session::{CONFINEMENT_DEVELOPMENT, CONFINEMENT_DEVELOPMENT_GPU};
use rapha_enclave::{EnclaveError, EnclaveSession};
use serde_json::{json, Value};

use crate::support::{cohort, job_spec, require_sandbox, run_trainer_with, sandbox_config};

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cdi")
}

/// The device numbers of the two-GPU host the sample spec was written for.
fn gpu_host(p: &Path) -> NodeInfo {
    let (major, minor) = match p.to_str().unwrap() {
        "/dev/nvidia0" => (195, 0),
        "/dev/nvidia1" => (195, 1),
        "/dev/nvidiactl" => (195, 255),
        "/dev/nvidia-modeset" => (195, 254),
        "/dev/nvidia-uvm" => (508, 0),
        "/dev/nvidia-uvm-tools" => (508, 1),
        "/dev/dri/card1" => (226, 1),
        "/dev/dri/card2" => (226, 2),
        "/dev/dri/renderD128" => (226, 128),
        "/dev/dri/renderD129" => (226, 129),
        other => return Err(format!("{other}: no such device on the GPU host")),
    };
    Ok(('c', major, minor))
}

fn gpus(names: &[&str]) -> GpuDevices {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    GpuDevices::resolve_with(&[sample_dir()], &names, gpu_host).unwrap()
}

fn limits(gpus: u32) -> ResourceLimits {
    ResourceLimits {
        gpus,
        ..ResourceLimits::default()
    }
}

fn spec_for(cfg: &SandboxConfig, limits: &ResourceLimits) -> Value {
    let p = Path::new("/nonexistent");
    oci_spec(
        cfg,
        &LaunchSpec {
            container_id: "rapha-test",
            rootfs: p,
            entrypoint: &["/trainer".into()],
            limits,
            socket_dir: p,
            out_dir: p,
            bundle_dir: p,
            inputs: None,
            wall: Duration::from_secs(5),
        },
    )
}

fn gpu_node(devices: GpuDevices) -> SandboxConfig {
    SandboxConfig {
        gpus: Some(Arc::new(devices)),
        ..SandboxConfig::default()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_gpu_job_gets_the_nvidia_ctk_specs_devices_mounts_env_and_hooks() {
    let cfg = gpu_node(gpus(&["nvidia.com/gpu=all"]));
    let spec = spec_for(&cfg, &limits(1));

    let devices = spec["linux"]["devices"].as_array().unwrap();
    let paths: Vec<&str> = devices
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/dev/nvidia-modeset",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidiactl",
            "/dev/nvidia0",
            "/dev/dri/card1",
            "/dev/dri/renderD128",
            "/dev/nvidia1",
            "/dev/dri/card2",
            "/dev/dri/renderD129",
        ]
    );
    assert_eq!(
        devices[4],
        json!({"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0})
    );
    // The cgroup keeps denying every device first, then allows exactly these, read and write.
    let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
    assert_eq!(rules[0], json!({"allow": false, "access": "rwm"}));
    assert_eq!(rules.len(), 1 + devices.len());
    assert_eq!(
        rules[5],
        json!({"allow": true, "type": "c", "major": 195, "minor": 0, "access": "rw"})
    );

    let mounts = spec["mounts"].as_array().unwrap();
    let node_own: Vec<&str> = mounts[..5]
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(node_own, ["/proc", "/dev", "/rapha", "/out", "/tmp"]);
    let cuda = mounts
        .iter()
        .find(|m| m["destination"] == "/usr/lib/x86_64-linux-gnu/libcuda.so.550.127.05")
        .unwrap();
    assert_eq!(
        cuda,
        &json!({"destination": "/usr/lib/x86_64-linux-gnu/libcuda.so.550.127.05",
                "type": "bind",
                "source": "/usr/lib/x86_64-linux-gnu/libcuda.so.550.127.05",
                "options": ["bind", "ro", "nosuid", "nodev"]})
    );
    assert_eq!(mounts.len(), 5 + 5);

    let env = strings(&spec["process"]["env"]);
    assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=void".to_owned()));
    assert!(env.contains(&"RAPHA_OUT=/out".to_owned()));

    let hooks = spec["hooks"]["createContainer"].as_array().unwrap();
    assert!(hooks.iter().all(|h| h["path"] == "/usr/bin/nvidia-ctk"));
    let ldcache = hooks
        .iter()
        .find(|h| strings(&h["args"]).contains(&"update-ldcache".to_owned()))
        .unwrap();
    assert_eq!(
        strings(&ldcache["args"]),
        [
            "nvidia-ctk",
            "hook",
            "update-ldcache",
            "--folder",
            "/usr/lib/x86_64-linux-gnu"
        ]
    );
    // The chmod hook of every device is the same one: applied once.
    assert_eq!(hooks.len(), 3);
    // Nothing else of the sandbox moved.
    assert_eq!(spec["process"]["noNewPrivileges"], true);
    assert_eq!(spec["process"]["capabilities"]["bounding"], json!([]));
    assert_eq!(spec["root"]["readonly"], true);
}

#[test]
fn a_named_gpu_gets_only_its_own_device_nodes() {
    let cfg = gpu_node(gpus(&["nvidia.com/gpu=1"]));
    let spec = spec_for(&cfg, &limits(1));
    let paths: Vec<&str> = spec["linux"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/dev/nvidia1"));
    assert!(paths.contains(&"/dev/nvidiactl"));
    assert!(!paths.contains(&"/dev/nvidia0"), "{paths:?}");
    assert!(!paths.contains(&"/dev/dri/card1"), "{paths:?}");
}

/// A job gets as many of the configured names as it declared GPUs, in the configured order:
/// declaring one on a node that names two devices gives it the first only.
#[test]
fn a_job_gets_as_many_configured_gpus_as_it_declared() {
    let cfg = gpu_node(gpus(&["nvidia.com/gpu=0", "nvidia.com/gpu=1"]));
    let paths = |n: u32| -> Vec<String> {
        spec_for(&cfg, &limits(n))["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap().to_owned())
            .collect()
    };
    let one = paths(1);
    assert!(one.contains(&"/dev/nvidia0".to_owned()), "{one:?}");
    assert!(!one.contains(&"/dev/nvidia1".to_owned()), "{one:?}");
    assert!(one.contains(&"/dev/nvidiactl".to_owned()), "{one:?}");
    let two = paths(2);
    assert!(two.contains(&"/dev/nvidia0".to_owned()) && two.contains(&"/dev/nvidia1".to_owned()));
    assert_eq!(paths(9), two);
}

/// Attacker side: a publisher whose bundle declared no GPU gets nothing of the node's GPUs,
/// even on a node that has them configured: its runc spec is the one of a node without GPUs.
#[test]
fn a_job_that_declared_no_gpu_gets_no_device_on_a_gpu_node() {
    let with = gpu_node(gpus(&["nvidia.com/gpu=all"]));
    let without = SandboxConfig::default();
    let l = limits(0);
    let spec = spec_for(&with, &l);
    assert_eq!(spec, spec_for(&without, &l));
    assert!(spec["linux"].get("devices").is_none());
    assert!(spec.get("hooks").is_none());
    assert_eq!(
        spec["linux"]["resources"]["devices"],
        json!([{"allow": false, "access": "rwm"}])
    );
    let env = strings(&spec["process"]["env"]);
    assert!(!env.iter().any(|e| e.starts_with("NVIDIA")), "{env:?}");
}

/// Attacker side: a bundle declaring a GPU that reached the runtime of a node with none
/// (admission refuses it first) is refused before any container or spec is made.
#[test]
fn the_sandbox_refuses_a_gpu_job_on_a_node_without_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SandboxConfig {
        runtime_root: dir.path().join("runc"),
        ..SandboxConfig::default()
    };
    let l = limits(1);
    let err = rapha_enclave::sandbox::run(
        &cfg,
        &LaunchSpec {
            container_id: "rapha-gpu-test",
            rootfs: dir.path(),
            entrypoint: &["/trainer".into()],
            limits: &l,
            socket_dir: dir.path(),
            out_dir: dir.path(),
            bundle_dir: dir.path(),
            inputs: None,
            wall: Duration::from_secs(5),
        },
    )
    .unwrap_err();
    assert!(matches!(err, EnclaveError::NoGpu { requested: 1 }), "{err}");
    assert!(!dir.path().join("config.json").exists());
}

#[test]
fn a_gpu_jobs_confinement_says_its_pixels_are_in_gpu_memory() {
    let mut job = job_spec(Duration::from_secs(5));
    assert_eq!(
        EnclaveSession::new(job.clone()).unwrap().confinement(),
        CONFINEMENT_DEVELOPMENT
    );
    job.limits.gpus = 1;
    assert_eq!(
        EnclaveSession::new(job).unwrap().confinement(),
        CONFINEMENT_DEVELOPMENT_GPU
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

fn resolve(dirs: &[PathBuf], name: &str) -> Result<GpuDevices, CdiError> {
    GpuDevices::resolve_with(dirs, &[name.to_owned()], gpu_host)
}

const ONE_GPU: &str = r#"{"cdiVersion": "0.6.0", "kind": "example.com/gpu",
  "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0"}]}}],
  "containerEdits": EDITS}"#;

fn one_gpu_with(edits: &str) -> String {
    ONE_GPU.replace("EDITS", edits)
}

#[test]
fn specs_whose_edits_would_weaken_the_sandbox_are_refused() {
    let cases = [
        (
            r#"{"netDevices": [{"hostInterfaceName": "eth0", "name": "eth0"}]}"#,
            "it adds network devices, which would give the trainer a network",
        ),
        (
            r#"{"mounts": [{"hostPath": "/srv/pacs", "containerPath": "/out"}]}"#,
            "it mounts /out over the node's own /out",
        ),
        (
            r#"{"mounts": [{"hostPath": "/srv", "containerPath": "/rapha/x"}]}"#,
            "it mounts /rapha/x over the node's own /rapha",
        ),
        (
            r#"{"mounts": [{"hostPath": "/", "containerPath": "/"}]}"#,
            "mount destination \"/\" is not an absolute path below /",
        ),
        (
            r#"{"mounts": [{"hostPath": "/x", "containerPath": "/usr/../out"}]}"#,
            "mount destination \"/usr/../out\" is not an absolute path below /",
        ),
        (
            r#"{"mounts": [{"hostPath": "none", "containerPath": "/mnt", "type": "tmpfs"}]}"#,
            "mount source \"none\" is not absolute",
        ),
        (
            r#"{"env": ["RAPHA_DATA_SOCKET=/tmp/s"]}"#,
            "it sets \"RAPHA_DATA_SOCKET\", which the node sets for the trainer",
        ),
        (
            r#"{"env": ["PATH=/evil"]}"#,
            "it sets \"PATH\", which the node sets for the trainer",
        ),
        (
            r#"{"additionalGIDs": [0]}"#,
            "it adds the trainer to group 0 (root)",
        ),
        (
            r#"{"hooks": [{"hookName": "createRuntime", "path": "nvidia-ctk"}]}"#,
            "hook path \"nvidia-ctk\" is not absolute",
        ),
    ];
    for (i, (edits, why)) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "gpu.json", &one_gpu_with(edits));
        let err = resolve(&[dir.path().to_owned()], "example.com/gpu=0").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the CDI spec {} is refused: {why}",
                dir.path().join("gpu.json").display()
            ),
            "case {i}"
        );
    }
}

#[test]
fn a_field_the_node_does_not_know_refuses_the_spec_instead_of_being_dropped() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "gpu.json",
        &one_gpu_with(r#"{"futureIsolationEdit": {"off": true}}"#),
    );
    let err = resolve(&[dir.path().to_owned()], "example.com/gpu=0").unwrap_err();
    let CdiError::Parse { detail, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        detail.contains("unknown field `futureIsolationEdit`"),
        "{detail}"
    );
}

#[test]
fn device_nodes_outside_dev_and_unknown_or_malformed_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "gpu.json",
        &one_gpu_with(
            r#"{"deviceNodes": [{"path": "/etc/shadow", "type": "c", "major": 1, "minor": 1}]}"#,
        ),
    );
    let dirs = [dir.path().to_owned()];
    let err = resolve(&dirs, "example.com/gpu=0").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the device node /etc/shadow of the CDI spec ",)
            && err
                .to_string()
                .ends_with("cannot be used: a device node must be an absolute path under /dev"),
        "{err}"
    );
    let err = resolve(&dirs, "example.com/gpu=7").unwrap_err();
    assert!(matches!(err, CdiError::Unknown { .. }), "{err}");
    for bad in ["gpu", "example.com/gpu", "/gpu=0", "example.com/gpu=../0"] {
        let err = resolve(&dirs, bad).unwrap_err();
        assert!(matches!(err, CdiError::BadName { .. }), "{bad}: {err}");
    }
}

#[test]
fn the_run_dir_overrides_etc_and_one_dir_may_not_define_a_device_twice() {
    let root = tempfile::tempdir().unwrap();
    let (etc, run) = (root.path().join("etc"), root.path().join("run"));
    write(&etc, "a.json", &one_gpu_with(r#"{"env": ["WHERE=etc"]}"#));
    write(&run, "a.json", &one_gpu_with(r#"{"env": ["WHERE=run"]}"#));
    let devs = resolve(&[etc.clone(), run.clone()], "example.com/gpu=0").unwrap();
    assert_eq!(devs.spec_files(), [run.join("a.json")]);
    let mut spec = json!({"process": {"env": []}});
    devs.apply(&mut spec, 1);
    assert_eq!(spec["process"]["env"], json!(["WHERE=run"]));

    write(&etc, "b.yaml", &one_gpu_with("{}"));
    let err = resolve(std::slice::from_ref(&etc), "example.com/gpu=0").unwrap_err();
    assert!(matches!(err, CdiError::Duplicate { .. }), "{err}");
}

#[test]
fn a_spec_of_another_kind_is_not_read_and_a_broken_one_of_ours_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "other.yaml",
        "kind: vendor.example/fpga\nunknown: [1, 2\n",
    );
    write(
        dir.path(),
        "other2.yaml",
        "kind: vendor.example/fpga\ncdiVersion: 9.0.0\n",
    );
    write(dir.path(), "gpu.json", &one_gpu_with("{}"));
    resolve(&[dir.path().to_owned()], "example.com/gpu=0").unwrap_err();
    // other.yaml does not even parse as YAML: it is reported, whatever its kind.
    std::fs::remove_file(dir.path().join("other.yaml")).unwrap();
    resolve(&[dir.path().to_owned()], "example.com/gpu=0").unwrap();
    std::fs::remove_file(dir.path().join("gpu.json")).unwrap();
    write(
        dir.path(),
        "gpu.yaml",
        "cdiVersion: 2.0.0\nkind: example.com/gpu\n",
    );
    let err = resolve(&[dir.path().to_owned()], "example.com/gpu=0").unwrap_err();
    assert!(err.to_string().contains("cdiVersion \"2.0.0\""), "{err}");
}

/// The host probe on real device nodes: a spec that leaves out the type and the numbers gets
/// them from the host, as runtimes fill them; a host path that is no device is refused.
#[test]
fn device_numbers_left_out_are_read_from_the_host() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "gpu.json",
        r#"{"cdiVersion": "0.5.0", "kind": "example.com/gpu", "devices": [
            {"name": "null", "containerEdits": {"deviceNodes": [{"path": "/dev/gpu0", "hostPath": "/dev/null"}]}},
            {"name": "file", "containerEdits": {"deviceNodes": [{"path": "/dev/gpu1", "hostPath": "/etc/hostname"}]}}]}"#,
    );
    let dirs = [dir.path().to_owned()];
    let devs = GpuDevices::resolve(&dirs, &["example.com/gpu=null".into()]).unwrap();
    let n = &devs.device_nodes()[0];
    assert_eq!((n.kind, n.major, n.minor), ('c', 1, 3));
    assert_eq!(n.host_path, "/dev/null");
    let err = GpuDevices::resolve(&dirs, &["example.com/gpu=file".into()]).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("cannot be used: the host's /etc/hostname: not a device node"),
        "{err}"
    );
}

/// On the real runc, with a spec that stands the node's GPU for the host's `/dev/loop-control`
/// (a character device runc does not allow by default, so only the spec's cgroup rule lets the
/// trainer open it): the GPU job's trainer opens the device node the spec lists; a job that
/// declared no GPU, on the same node, finds no such device.
#[test]
fn runc_gives_the_cdi_device_to_a_gpu_job_and_nothing_to_another() {
    let Some(bin) = require_sandbox() else { return };
    let specs = tempfile::tempdir().unwrap();
    write(
        specs.path(),
        "gpu.yaml",
        "cdiVersion: 0.6.0\nkind: example.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    \
         deviceNodes:\n    - path: /dev/gpu0\n      hostPath: /dev/loop-control\n",
    );
    let devices =
        GpuDevices::resolve(&[specs.path().to_owned()], &["example.com/gpu=0".into()]).unwrap();
    assert_eq!(
        devices.device_nodes()[0].major,
        10,
        "{:?}",
        devices.device_nodes()
    );
    let devices = Arc::new(devices);
    let run = |gpus: u32| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SandboxConfig {
            gpus: Some(devices.clone()),
            ..sandbox_config(dir.path())
        };
        let mut spec = job_spec(Duration::from_secs(20));
        spec.limits.gpus = gpus;
        run_trainer_with(
            dir.path(),
            bin,
            &["read", "/dev/gpu0"],
            &cohort(12, 2),
            spec,
            cfg,
        )
    };
    let gpu = run(1);
    // Opened (no "open ret=-1"): the device exists and its cgroup rule admits it.
    assert!(
        gpu.stdout().contains("bytes of /dev/gpu0"),
        "{}",
        gpu.stdout()
    );
    assert_eq!(
        gpu.result.signed.manifest.confinement,
        CONFINEMENT_DEVELOPMENT_GPU
    );
    let plain = run(0);
    assert!(
        plain.stdout().contains("open ret=-1 errno=2"),
        "{}",
        plain.stdout()
    );
    assert_eq!(
        plain.result.signed.manifest.confinement,
        CONFINEMENT_DEVELOPMENT
    );
}
