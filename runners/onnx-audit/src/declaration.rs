//! `audit.json`: the signed predicate's audit declaration, as the node hands it over:
//! `{"input": {"kind": "grey-v1", "side": 64}, "output": "logit"}`. Anything else is refused.

use serde_json::Value;

use crate::Refusal;

/// Largest `side` accepted (a 1024 x 1024 image).
pub const MAX_SIDE: usize = 1024;

/// The canonical preprocessing the graph's input is declared to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// `rapha_trainer_sdk::preprocess::grey_v1` at `side`: input `[N, 1, side, side]`.
    GreyV1 { side: usize },
}

impl Input {
    /// The graph's input shape for a batch of `n` records.
    pub fn shape(self, n: usize) -> [usize; 4] {
        match self {
            Self::GreyV1 { side } => [n, 1, side, side],
        }
    }
}

/// What the graph's one output is, per record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A logit: the score is its sigmoid.
    Logit,
    /// The probability of the positive class itself.
    Probability,
}

/// The parsed declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Declaration {
    pub input: Input,
    pub output: Output,
}

impl Declaration {
    /// Parses `audit.json`.
    ///
    /// # Errors
    /// Not JSON, an unknown key, an input kind or output this runner does not know, a side
    /// outside `1..=MAX_SIDE`.
    pub fn parse(bytes: &[u8]) -> Result<Self, Refusal> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| Refusal::declaration(format!("audit.json is not JSON: {e}")))?;
        let top = only_keys(&v, "audit.json", &["input", "output"])?;
        let input = top
            .get("input")
            .ok_or_else(|| Refusal::declaration("audit.json has no \"input\""))?;
        let input_keys = only_keys(input, "audit.json input", &["kind", "side"])?;
        let input = match input_keys.get("kind").and_then(Value::as_str) {
            Some(rapha_trainer_sdk::preprocess::GREY_V1) => {
                let side = input_keys
                    .get("side")
                    .and_then(Value::as_u64)
                    .and_then(|s| usize::try_from(s).ok())
                    .filter(|s| (1..=MAX_SIDE).contains(s))
                    .ok_or_else(|| {
                        Refusal::declaration(format!(
                            "audit.json input side must be an integer in 1..={MAX_SIDE}"
                        ))
                    })?;
                Input::GreyV1 { side }
            }
            Some(other) => {
                return Err(Refusal::declaration(format!(
                    "unknown input kind {:?} (this runner knows \"grey-v1\")",
                    other.chars().take(32).collect::<String>()
                )))
            }
            None => {
                return Err(Refusal::declaration(
                    "audit.json input has no string \"kind\"",
                ))
            }
        };
        let output = match top.get("output").and_then(Value::as_str) {
            Some("logit") => Output::Logit,
            Some("probability") => Output::Probability,
            _ => {
                return Err(Refusal::declaration(
                    "audit.json output must be \"logit\" or \"probability\"",
                ))
            }
        };
        Ok(Self { input, output })
    }
}

fn only_keys<'a>(
    v: &'a Value,
    what: &str,
    keys: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, Refusal> {
    let map = v
        .as_object()
        .ok_or_else(|| Refusal::declaration(format!("{what} is not a JSON object")))?;
    if let Some(k) = map.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(Refusal::declaration(format!(
            "{what} has an unknown key {:?}",
            k.chars().take(32).collect::<String>()
        )));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_example_parses() {
        let d =
            Declaration::parse(br#"{"input": {"kind": "grey-v1", "side": 64}, "output": "logit"}"#);
        assert_eq!(
            d,
            Ok(Declaration {
                input: Input::GreyV1 { side: 64 },
                output: Output::Logit
            })
        );
        let p = Declaration::parse(
            br#"{"input": {"kind": "grey-v1", "side": 8}, "output": "probability"}"#,
        );
        assert_eq!(p.map(|d| d.output), Ok(Output::Probability));
    }

    #[test]
    fn anything_else_is_refused_with_exit_code_2() {
        for (json, says) in [
            (
                r#"{"input": {"kind": "rgb-v9", "side": 64}, "output": "logit"}"#,
                "unknown input kind \"rgb-v9\"",
            ),
            (
                r#"{"input": {"kind": "grey-v1", "side": 0}, "output": "logit"}"#,
                "side must be",
            ),
            (
                r#"{"input": {"kind": "grey-v1", "side": 1025}, "output": "logit"}"#,
                "side must be",
            ),
            (
                r#"{"input": {"kind": "grey-v1", "side": 64}, "output": "softmax"}"#,
                "output must be",
            ),
            (
                r#"{"input": {"kind": "grey-v1", "side": 64}, "output": "logit", "x": 1}"#,
                "unknown key \"x\"",
            ),
            (
                r#"{"input": {"kind": "grey-v1", "side": 64, "mean": 0.5}, "output": "logit"}"#,
                "unknown key \"mean\"",
            ),
            (r#"{"output": "logit"}"#, "no \"input\""),
            ("[]", "not a JSON object"),
            ("{", "not JSON"),
        ] {
            let e = Declaration::parse(json.as_bytes()).unwrap_err();
            assert_eq!(e.code, 2, "{json}");
            assert!(e.reason.contains(says), "{json}: {}", e.reason);
        }
    }
}
