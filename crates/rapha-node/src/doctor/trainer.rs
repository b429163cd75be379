//! The trainer's side of the appliance: the OCI runtime runs, the resource bounds fit the
//! appliance's memory, and configured GPUs exist with their driver (**I3**).

use std::path::Path;
use std::process::Command;

use crate::config::Config;

use super::{fail, Outcome};

pub(super) fn check_trainer(config: &Config) -> Outcome {
    let rt = &config.trainer.runtime;
    let fix = "install an OCI runtime (e.g. runc) and set trainer.runtime to its absolute path";
    if !rt.is_absolute() {
        return fail(format!("{} is not an absolute path", rt.display()), fix);
    }
    let meta = std::fs::metadata(rt).or_else(|e| fail(format!("{}: {e}", rt.display()), fix))?;
    use std::os::unix::fs::PermissionsExt;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return fail(format!("{} is not an executable file", rt.display()), fix);
    }
    let out = Command::new(rt)
        .args(&config.trainer.runtime_args)
        .arg("--version")
        .output()
        .or_else(|e| fail(format!("{} cannot be run: {e}", rt.display()), fix))?;
    if !out.status.success() {
        return fail(
            format!("`{} --version` failed ({})", rt.display(), out.status),
            fix,
        );
    }
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    Ok(format!("{}: {version}", rt.display()))
}

/// The appliance's memory in MiB (`MemTotal` of /proc/meminfo), if it can be read.
pub(super) fn memory_total_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Shows the bounds a bundle's resource requests must fall in, and refuses a memory bound the
/// appliance cannot honour (a trainer admitted up to it would push the node out of memory).
pub(super) fn check_trainer_limits(config: &Config, memory_mb: Option<u64>) -> Outcome {
    let l = &config.trainer.limits;
    l.validate().or_else(|(key, message)| {
        fail(
            format!("trainer.limits.{key}: {message}"),
            "set each bound as { min = N, max = M } with 1 <= min <= max",
        )
    })?;
    if let Some(total) = memory_mb {
        if l.memory_mb.max >= total {
            return fail(
                format!(
                    "trainer.limits.memory_mb.max = {} MiB is not below this appliance's {total} MiB of memory",
                    l.memory_mb.max
                ),
                "lower trainer.limits.memory_mb.max so a trainer cannot take the node's own memory",
            );
        }
    }
    Ok(format!(
        "memory {} MiB, cpus {}, pids {}, wall time {} s, /tmp {} MiB, gpus {}",
        l.memory_mb,
        l.cpus,
        l.pids,
        l.wall_seconds,
        l.tmp_mb,
        l.gpu_bound()
    ))
}

/// The GPUs a GPU job would get: the CDI specs parse, define the configured names and make
/// only edits the node applies, and the driver is there (each device node the specs list is a
/// device of the host, each library or socket they mount exists).
pub fn check_gpus(t: &crate::config::TrainerConfig) -> Outcome {
    if t.gpus.is_empty() {
        return Ok("not configured: jobs declaring a GPU are refused at admission".into());
    }
    let dirs = t.cdi_dirs();
    let shown_dirs = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let gpus = rapha_enclave::cdi::GpuDevices::resolve(&dirs, &t.gpus).or_else(|e| {
        fail(
            e.to_string(),
            format!(
                "install the GPU driver and generate its CDI spec into one of {shown_dirs} \
                 (e.g. `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`), then name \
                 devices it lists (`nvidia-ctk cdi list`) in trainer.gpus"
            ),
        )
    })?;
    let driver_fix = "the CDI spec names driver files this host does not have: install the \
                      driver it was generated for, or generate the spec again";
    for n in gpus.device_nodes() {
        let (kind, major, minor) = rapha_enclave::cdi::stat_device(Path::new(&n.host_path))
            .or_else(|e| fail(format!("device node {}: {e}", n.host_path), driver_fix))?;
        if (kind, major, minor) != (n.kind, n.major, n.minor) {
            return fail(
                format!(
                    "device node {} is {kind} {major}:{minor} on this host, the spec says {} {}:{}",
                    n.host_path, n.kind, n.major, n.minor
                ),
                driver_fix,
            );
        }
    }
    if let Some(missing) = gpus.mount_sources().find(|p| !Path::new(p).exists()) {
        return fail(
            format!("{missing} (mounted into GPU jobs) does not exist"),
            driver_fix,
        );
    }
    Ok(format!(
        "{} from {}: {} device nodes, {} mounts; a GPU job's pixels in GPU memory are outside \
         any enclave (its receipt's confinement says so)",
        t.gpus.join(", "),
        gpus.spec_files()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        gpus.device_nodes().len(),
        gpus.mount_sources().count()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(crate::init::PRODUCTION_TEMPLATE).unwrap()
    }

    #[test]
    fn trainer_limits_are_shown() {
        let detail = check_trainer_limits(&config(), Some(64 * 1024)).unwrap();
        assert_eq!(
            detail,
            "memory 64..=16384 MiB, cpus 1..=8, pids 8..=1024, wall time 10..=86400 s, /tmp 1..=1024 MiB, gpus 0..=0"
        );
    }

    fn gpu_trainer(dir: &Path, gpus: &[&str]) -> crate::config::TrainerConfig {
        let mut t = config().trainer;
        t.gpus = gpus.iter().map(|g| (*g).to_owned()).collect();
        t.cdi_spec_dirs = Some(vec![dir.to_owned()]);
        t
    }

    #[test]
    fn no_gpus_configured_passes_and_says_gpu_jobs_are_refused() {
        let t = config().trainer;
        assert_eq!(
            check_gpus(&t).unwrap(),
            "not configured: jobs declaring a GPU are refused at admission"
        );
    }

    /// This machine has no GPU: the spec stands its GPU for /dev/null, and the driver check
    /// runs on that real device node.
    #[test]
    fn gpus_pass_when_the_spec_names_them_and_the_host_has_their_nodes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gpu.yaml"),
            "cdiVersion: 0.5.0\nkind: example.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/gpu0\n      hostPath: /dev/null\n",
        )
        .unwrap();
        let detail = check_gpus(&gpu_trainer(dir.path(), &["example.com/gpu=0"])).unwrap();
        assert!(
            detail.starts_with("example.com/gpu=0 from ")
                && detail.contains(": 1 device nodes, 0 mounts"),
            "{detail}"
        );
        let (detail, _) = check_gpus(&gpu_trainer(dir.path(), &["example.com/gpu=1"])).unwrap_err();
        assert!(detail.starts_with("no CDI spec in "), "{detail}");
    }

    /// The sample spec `nvidia-ctk` would write on a GPU host: this host has not its driver.
    #[test]
    fn gpus_fail_when_the_driver_the_spec_names_is_missing() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rapha-enclave/testdata/cdi");
        let (detail, fix) = check_gpus(&gpu_trainer(&dir, &["nvidia.com/gpu=all"])).unwrap_err();
        assert!(
            detail.starts_with("the device node /dev/nvidia-modeset of the CDI spec "),
            "{detail}"
        );
        assert!(fix.starts_with("install the GPU driver"), "{fix}");
        let (detail, _) = check_gpus(&gpu_trainer(&dir, &["nvidia.com/gpu=7"])).unwrap_err();
        assert!(detail.contains("defines \"nvidia.com/gpu=7\""), "{detail}");
    }

    #[test]
    fn a_memory_bound_the_appliance_cannot_honour_fails() {
        let (detail, _) = check_trainer_limits(&config(), Some(8 * 1024)).unwrap_err();
        assert_eq!(
            detail,
            "trainer.limits.memory_mb.max = 16384 MiB is not below this appliance's 8192 MiB of memory"
        );
    }
}
