//! Kinesis options and targets.

use std::fmt;

use serde::Deserialize;

use super::request::PartitionKeySource;

/// The Kinesis destination's own options (see the module doc); `timeout` / `endpoint` and
/// the AWS credentials are shared blocks.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KinesisOptions {
    pub partition_key: Option<PartitionKeySource>,
    #[serde(default)]
    pub aggregate: bool,
}

/// Where records go: Kinesis accepts either a name (resolved in the client's region and
/// account) or a full ARN, which AWS recommends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamTarget {
    Name(String),
    Arn(String),
}

impl StreamTarget {
    pub fn parse(target: &str) -> Result<Self, String> {
        if target.is_empty() {
            return Err(
                "missing stream name: use kinesis://STREAM or kinesis://arn:aws:kinesis:…".into(),
            );
        }
        if target.starts_with("arn:") {
            // arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME
            let parts: Vec<&str> = target.splitn(6, ':').collect();
            let valid = parts.len() == 6
                && parts[2] == "kinesis"
                && !parts[3].is_empty()
                && parts[5]
                    .strip_prefix("stream/")
                    .is_some_and(|n| !n.is_empty());
            if !valid {
                return Err(format!(
                    "`{target}` is not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)"
                ));
            }
            return Ok(StreamTarget::Arn(target.to_string()));
        }
        let valid_name = target.len() <= 128
            && target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_name {
            return Err(format!(
                "`{target}` is not a valid stream name (1-128 characters of a-z A-Z 0-9 _ . -)"
            ));
        }
        Ok(StreamTarget::Name(target.to_string()))
    }

    /// The region embedded in an ARN.
    pub fn arn_region(&self) -> Option<&str> {
        match self {
            StreamTarget::Arn(arn) => arn.split(':').nth(3),
            StreamTarget::Name(_) => None,
        }
    }
}

impl fmt::Display for StreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamTarget::Name(name) => write!(f, "Kinesis stream `{name}`"),
            StreamTarget::Arn(arn) => write!(f, "Kinesis stream `{arn}`"),
        }
    }
}
