//! `rapha job status [--watch]`: a job's state and progress, followed until it is finished.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use clap::Args;
use rapha_core::{JobId, Outcome};
use serde_json::{json, Value};

use crate::client::{NodeArgs, NodeClient};
use crate::exit::Failure;

use super::Printed;

fn poll_interval(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 0.1 to 3600"
        )),
    }
}

/// `rapha job status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job id (32 hex digits).
    pub job: JobId,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Poll until the job is finished; exit 3 if it ended refused or failed.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between polls with --watch (0.1 to 3600).
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = poll_interval)]
    pub interval: Duration,
    /// Give up watching after this many seconds (exit 1); default: watch until finished.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The job's status as the CLI reports it (stable field names).
#[derive(Clone, Debug, PartialEq)]
struct Status {
    job_id: String,
    state: String,
    step: u64,
    of: u64,
    outcome: Option<String>,
    reason: Option<String>,
    records: Value,
    finished: Option<bool>,
}

impl Status {
    fn from_api(v: &Value, node: &str) -> Result<Self, Failure> {
        let state = v["state"].as_str().ok_or_else(|| Failure::NodeError {
            url: node.to_owned(),
            status: 200,
            code: "bad-response".into(),
            message: "the job status has no state".into(),
        })?;
        Ok(Self {
            job_id: v["job_id"].as_str().unwrap_or_default().to_owned(),
            state: state.to_owned(),
            step: v["progress"]["step"].as_u64().unwrap_or(0),
            of: v["progress"]["of"].as_u64().unwrap_or(0),
            outcome: v["outcome"].as_str().map(str::to_owned),
            reason: v["reason"].as_str().map(str::to_owned),
            records: v.get("records").cloned().unwrap_or(Value::Null),
            finished: v["finished"].as_bool(),
        })
    }

    /// The node says whether the job is at its end (released when completed and paid,
    /// settled otherwise); a node from before that field ends every job at settled.
    fn terminal(&self) -> bool {
        self.finished.unwrap_or(self.state == "settled")
    }

    fn json(&self) -> Value {
        json!({
            "job_id": self.job_id,
            "state": self.state,
            "terminal": self.terminal(),
            "progress": { "step": self.step, "of": self.of },
            "outcome": self.outcome,
            "reason": self.reason,
            "records": self.records,
        })
    }

    fn line(&self) -> String {
        let mut s = format!(
            "job {}: {} (step {}/{})",
            self.job_id, self.state, self.step, self.of
        );
        if let Some(o) = &self.outcome {
            s.push_str(&format!(", outcome {o}"));
        }
        if let Some(r) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            s.push_str(&format!(": {r}"));
            if let Some(why) = explain(r) {
                s.push_str(&format!(" ({why})"));
            }
        }
        if let Some(hint) = self.hint() {
            s.push_str(&format!(" — {hint}"));
        }
        s
    }

    fn hint(&self) -> Option<&'static str> {
        match self.state.as_str() {
            // The node shows `admitted` from admission until its DPO decides (how long the
            // cohort took to build is the hospital's).
            "admitted" | "awaiting-approval" => {
                Some("the hospital builds the cohort and its DPO reviews the job")
            }
            "awaiting-deposit" => Some("waiting for your deposit (rapha job deposit)"),
            "running" => Some("the trainer is running (its end is shown on a whole minute)"),
            _ => None,
        }
    }

    /// One-line progress bar for a terminal.
    fn bar(&self) -> String {
        const WIDTH: u64 = 24;
        let filled = (self.step + 1)
            .min(self.of)
            .saturating_mul(WIDTH)
            .checked_div(self.of)
            .unwrap_or(0);
        let mut bar = "#".repeat(usize::try_from(filled).unwrap_or(0));
        bar.push_str(&"-".repeat(usize::try_from(WIDTH - filled).unwrap_or(0)));
        format!(
            "[{bar}] {}/{} {}{}",
            self.step + 1,
            self.of,
            self.state,
            self.hint().map(|h| format!(" — {h}")).unwrap_or_default()
        )
    }

    /// The outcome as a typed failure when the job is settled without completing.
    fn ended(&self) -> anyhow::Result<()> {
        match (self.terminal(), self.outcome.as_deref()) {
            (true, Some(o)) if o != "completed" => Err(Failure::JobNotCompleted {
                job: self.job_id.parse().unwrap_or(JobId::from_bytes([0; 16])),
                outcome: o.to_owned(),
                reason: self.reason.clone().unwrap_or_default(),
            }
            .into()),
            _ => Ok(()),
        }
    }
}

/// What a reason code means for the AI company, from the fixed vocabulary the node answers
/// with (`rapha_core::ReasonCode`): the node never sends more (no file names, exit statuses
/// or which rule of the guard fired), so neither does the CLI.
fn explain(code: &str) -> Option<&'static str> {
    use rapha_core::ReasonCode as R;
    let code = R::parse(code)?;
    Some(match code {
        R::Completed => "the outputs passed the output guard",
        R::OutputGuard => {
            "the hospital's output guard refused the outputs: nothing is released, the fee is \
             charged, and your publisher is suspended until the hospital's DPO reviews the job"
        }
        R::TrainerFailed => {
            "the trainer failed (exit status, memory or wall time): nothing is released, the \
             fee is charged"
        }
        R::PublisherSuspended => {
            "your publisher is suspended after an earlier output-guard violation; the hospital's \
             DPO lifts it after review (refunded)"
        }
        R::QuotaExceeded => "your publisher is at its quota on this node (refunded)",
        R::DpoRejected => "the hospital's DPO rejected the job (refunded)",
        _ => match code.outcome() {
            Outcome::Refused => "refused before the trainer ran (refunded)",
            Outcome::Failed => "the node failed, not the trainer (refunded)",
            _ => return None,
        },
    })
}

fn get_status(client: &NodeClient, job: JobId) -> Result<Status, Failure> {
    Status::from_api(&client.get_json(&format!("/v1/jobs/{job}"))?, client.base())
}

pub(super) fn status(args: &StatusArgs) -> anyhow::Result<Printed> {
    let client = NodeClient::new(&args.node)?;
    let mut st = get_status(&client, args.job)?;
    if args.watch {
        let tty = std::io::stderr().is_terminal();
        let interval = args.interval;
        let started = Instant::now();
        let mut last: Option<(String, Instant)> = None;
        loop {
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = write!(err, "\r\x1b[2K{}", st.bar());
            } else {
                // Plain lines: on every change of state, and once a minute while it holds.
                let due = last.as_ref().is_none_or(|(s, at)| {
                    *s != st.state || at.elapsed() >= Duration::from_secs(60)
                });
                if due {
                    let _ = writeln!(err, "{}", st.line());
                    last = Some((st.state.clone(), Instant::now()));
                }
            }
            let _ = err.flush();
            drop(err);
            if st.terminal() {
                break;
            }
            if let Some(limit) = args.timeout {
                if started.elapsed() >= Duration::from_secs(limit) {
                    if tty {
                        eprintln!();
                    }
                    anyhow::bail!(
                        "job {} is still {} after {limit} s; run `rapha job status --watch` \
                         again to keep following it",
                        args.job,
                        st.state
                    );
                }
            }
            std::thread::sleep(interval);
            st = get_status(&client, args.job)?;
        }
        if tty {
            eprintln!();
        }
    }
    let then = if args.watch { st.ended() } else { Ok(()) };
    Ok(Printed {
        json: st.json(),
        text: format!("{}\n", st.line()),
        then,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, step: u64) -> Status {
        Status {
            job_id: "00".repeat(16),
            state: state.into(),
            step,
            of: 17,
            outcome: None,
            reason: None,
            records: Value::Null,
            finished: None,
        }
    }

    #[test]
    fn the_progress_bar_fills_with_the_step_and_names_what_the_job_waits_for() {
        assert_eq!(
            status("received", 0).bar(),
            "[#-----------------------] 1/17 received"
        );
        assert_eq!(
            status("awaiting-deposit", 6).bar(),
            "[#########---------------] 7/17 awaiting-deposit — waiting for your deposit \
             (rapha job deposit)"
        );
        assert_eq!(
            status("settled", 16).bar(),
            "[########################] 17/17 settled"
        );
    }

    #[test]
    fn only_a_settled_job_that_did_not_complete_is_a_failure() {
        let mut st = status("settled", 16);
        st.outcome = Some("completed".into());
        assert!(st.ended().is_ok());
        st.outcome = Some("refused".into());
        st.reason = Some("query-refused".into());
        let err = st.ended().unwrap_err();
        assert_eq!(
            crate::exit::classify(&err).0,
            crate::exit::JOB_NOT_COMPLETED
        );
        assert!(err.to_string().ends_with("ended refused: query-refused"));
        st.outcome = Some("violated".into());
        st.reason = Some("output-guard".into());
        assert!(st.ended().is_err(), "a violated job is not a success");
        assert!(
            st.line()
                .contains("output-guard (the hospital's output guard refused the outputs"),
            "{}",
            st.line()
        );
        // A reason outside the vocabulary is printed as sent, never explained.
        st.reason = Some("something else".into());
        assert!(st.line().ends_with(": something else"), "{}", st.line());
        let mut running = status("refused", 12);
        running.outcome = Some("refused".into());
        assert!(running.ended().is_ok(), "not settled yet: still watched");
    }
}
