//! Pub/Sub options and targets.

use std::fmt;

use serde::Deserialize;

/// The Pub/Sub destination's own options (see the module doc); `timeout` / `endpoint` and
/// the Google credentials are shared blocks.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PubSubOptions {
    #[serde(default)]
    pub ordering: bool,
}

/// A fully qualified topic name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicName(String);

impl TopicName {
    pub fn parse(target: &str) -> Result<Self, String> {
        let parts: Vec<&str> = target.split('/').collect();
        match parts.as_slice() {
            ["projects", project, "topics", topic] if !project.is_empty() && !topic.is_empty() => {
                Ok(TopicName(target.to_string()))
            }
            _ => Err(format!(
                "`{target}` is not a topic: use pubsub://projects/PROJECT/topics/TOPIC"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pub/Sub topic `{}`", self.0)
    }
}
