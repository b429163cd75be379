//! swtpm (TPM 2.0 simulator) over TCP, optionally manufactured with EK and platform
//! certificates from a private local CA.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{find_binary, free_port_pair, log_tail, port_open, Proc, Workdir};
use super::{missing, HarnessError, START_ATTEMPTS};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running swtpm: TPM commands on [`Swtpm::port`], control channel on `port + 1`.
pub struct Swtpm {
    proc: Proc,
    dir: Workdir,
    port: u16,
    state_dir: PathBuf,
    ek_ca: Option<PathBuf>,
    ek_root_ca: Option<PathBuf>,
}

impl std::fmt::Debug for Swtpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swtpm")
            .field("tcti", &self.tcti())
            .finish_non_exhaustive()
    }
}

impl Swtpm {
    /// `swtpm socket --tpm2 --server type=tcp,port=P --ctrl type=tcp,port=P+1
    /// --flags not-need-init,startup-clear` with its own (unmanufactured) state dir.
    pub fn start() -> Result<Option<Swtpm>, HarnessError> {
        let Some(bin) = find_binary(None, "swtpm", &[]) else {
            return missing("swtpm", "no swtpm in PATH".into());
        };
        let dir = Workdir::new("swtpm")?;
        let state = dir.path().join("state");
        mkdir(&state)?;
        Self::run(&bin, dir, state, None).map(Some)
    }

    /// Manufactures the TPM first (`swtpm_setup --tpm2 --create-ek-cert
    /// --create-platform-cert`) with a local CA created in the service's own temporary
    /// directory (never the system one), then starts it. The EK certificates sit in the TPM's
    /// NV indices; [`Swtpm::ek_ca_cert_pem`] is the CA that signed them.
    pub fn start_provisioned() -> Result<Option<Swtpm>, HarnessError> {
        let Some(bin) = find_binary(None, "swtpm", &[]) else {
            return missing("swtpm", "no swtpm in PATH".into());
        };
        let Some(setup) = find_binary(None, "swtpm_setup", &[]) else {
            return missing(
                "swtpm_setup",
                "no swtpm_setup in PATH (Debian swtpm-tools)".into(),
            );
        };
        let Some(localca) = find_binary(None, "swtpm_localca", &[]) else {
            return missing(
                "swtpm_localca",
                "no swtpm_localca in PATH (Debian swtpm-tools)".into(),
            );
        };
        let mut dir = Workdir::new("swtpm")?;
        let root = dir.path().to_path_buf();
        let state = root.join("state");
        let ca = root.join("localca");
        mkdir(&state)?;
        mkdir(&ca)?;
        let setup_conf = root.join("swtpm_setup.conf");
        let ca_conf = root.join("swtpm-localca.conf");
        let ca_opts = root.join("swtpm-localca.options");
        write(
            &setup_conf,
            &format!(
                "create_certs_tool = {}\ncreate_certs_tool_config = {}\n\
                 create_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                localca.display(),
                ca_conf.display(),
                ca_opts.display()
            ),
        )?;
        write(
            &ca_conf,
            &format!(
                "statedir = {0}\nsigningkey = {0}/signkey.pem\nissuercert = {0}/issuercert.pem\n\
                 certserial = {0}/certserial\n",
                ca.display()
            ),
        )?;
        write(
            &ca_opts,
            "--platform-manufacturer Rapha\n--platform-version 2.1\n--platform-model rapha-test\n",
        )?;
        let setup_log = root.join("swtpm_setup.log");
        let status = Command::new(&setup)
            .arg("--tpm2")
            .arg("--create-ek-cert")
            .arg("--create-platform-cert")
            .arg("--overwrite")
            .arg("--tpmstate")
            .arg(&state)
            .arg("--config")
            .arg(&setup_conf)
            .arg("--logfile")
            .arg(&setup_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| HarnessError::io(format!("run {}", setup.display()), e))?;
        let issuer = ca.join("issuercert.pem");
        if !status.success() || !issuer.is_file() {
            dir.keep();
            return Err(HarnessError::Setup {
                what: format!("swtpm_setup ({status})"),
                log_tail: log_tail(&setup_log),
                log: setup_log,
            });
        }
        let root_ca = ca.join("swtpm-localca-rootca-cert.pem");
        let root_ca = root_ca.is_file().then_some(root_ca);
        let mut tpm = Self::run(&bin, dir, state, Some(issuer))?;
        tpm.ek_root_ca = root_ca;
        Ok(Some(tpm))
    }

    fn run(
        bin: &Path,
        mut dir: Workdir,
        state: PathBuf,
        ek_ca: Option<PathBuf>,
    ) -> Result<Swtpm, HarnessError> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port_pair()?;
            let ctrl = port + 1; // free_port_pair checked port + 1 fits and was free
            let args: Vec<OsString> = vec![
                "socket".into(),
                "--tpm2".into(),
                "--server".into(),
                format!("type=tcp,port={port},bindaddr=127.0.0.1").into(),
                "--ctrl".into(),
                format!("type=tcp,port={ctrl},bindaddr=127.0.0.1").into(),
                "--flags".into(),
                "not-need-init,startup-clear".into(),
                "--tpmstate".into(),
                format!("dir={}", state.display()).into(),
                "--log".into(),
                "level=1".into(),
            ];
            let mut proc = Proc::spawn("swtpm", bin, &args, dir.path(), dir.log())?;
            match proc.wait_ready(READY_TIMEOUT, || port_open(ctrl) && port_open(port)) {
                Ok(()) => {
                    return Ok(Swtpm {
                        proc,
                        dir,
                        port,
                        state_dir: state,
                        ek_ca,
                        ek_root_ca: None,
                    })
                }
                Err(e @ (HarnessError::Exited { .. } | HarnessError::NotReady { .. })) => {
                    drop(proc);
                    last = Some(e);
                }
                Err(e) => {
                    dir.keep();
                    return Err(e);
                }
            }
        }
        dir.keep();
        Err(last.unwrap_or(HarnessError::NoFreePort))
    }

    /// TCTI string for tpm2-tools / tss-esapi: `swtpm:host=127.0.0.1,port=P`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// TPM command port (the control channel is `port + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// PEM of the local CA certificate that signed the EK (and platform) certificates
    /// ([`Swtpm::start_provisioned`] only). It is an intermediate under
    /// [`Swtpm::ek_root_ca_cert_pem`].
    pub fn ek_ca_cert_pem(&self) -> Option<&Path> {
        self.ek_ca.as_deref()
    }

    /// PEM of the self-signed root of the local CA ([`Swtpm::start_provisioned`] only).
    pub fn ek_root_ca_cert_pem(&self) -> Option<&Path> {
        self.ek_root_ca.as_deref()
    }

    pub fn log_path(&self) -> &Path {
        self.dir.log()
    }

    /// Whether the swtpm process is still running (it exits when its state is corrupted).
    pub fn is_running(&mut self) -> bool {
        self.proc.check_alive().is_ok()
    }
}

fn mkdir(p: &Path) -> Result<(), HarnessError> {
    std::fs::create_dir_all(p).map_err(|e| HarnessError::io(format!("create {}", p.display()), e))
}

fn write(p: &Path, text: &str) -> Result<(), HarnessError> {
    std::fs::write(p, text).map_err(|e| HarnessError::io(format!("write {}", p.display()), e))
}
