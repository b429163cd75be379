/// Everything that can go wrong talking to the node or writing outputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    #[error("cannot connect to the record feed at {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to the node failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the node closed the connection")]
    Closed,
    #[error("frame header of {0} bytes exceeds the protocol limit of {1}")]
    HeaderTooLarge(usize, usize),
    #[error("frame payload of {0} bytes exceeds the protocol limit of {1}")]
    PayloadTooLarge(usize, usize),
    #[error("malformed frame from the node: {0}")]
    BadFrame(String),
    #[error("node refused {op}: {error}: {message}")]
    Refused {
        op: &'static str,
        error: String,
        message: String,
    },
    #[error(
        "record {index}: payload of {got} bytes does not match dtype {dtype} and shape {shape:?}"
    )]
    PayloadMismatch {
        index: u32,
        got: usize,
        dtype: String,
        shape: Vec<usize>,
    },
    #[error("unknown dtype {0:?}")]
    UnknownDtype(String),
    #[error("the connection lost step with the node after a failed read; reconnect")]
    Desynchronised,
    #[error("node speaks protocol {0}, this SDK speaks 1")]
    Version(u64),
    #[error("output {0}: {1}")]
    Output(String, String),
}

impl From<rapha_protocol::UnknownDtype> for SdkError {
    fn from(e: rapha_protocol::UnknownDtype) -> Self {
        Self::UnknownDtype(e.0)
    }
}
