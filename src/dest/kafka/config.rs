//! Kafka options, the target (brokers and topic), and their mapping to librdkafka properties.
//!
//! [`producer_properties`] is a pure function from options to the `(name, value)` list handed
//! to librdkafka, so the whole mapping (security, compression, timeouts, pass-through) is
//! unit-tested without a broker. librdkafka itself validates the list when the producer is
//! created; its errors are mapped back to the option the operator wrote
//! ([`option_for_property`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::dest::kinesis::PartitionKeySource;
use crate::dest::options::{OptionBlocks, OptionMap, Parsed, RequestOptions, Size};
use crate::dest::secrets::Secret;

/// The default largest message: librdkafka's and the broker's default `message.max.bytes`
/// (1,000,000 bytes; Confluent Cloud and MSK default to about 1 MB as well).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// Prefix of librdkafka properties passed through as they are.
pub const PASSTHROUGH_PREFIX: &str = "rdkafka.";

/// Properties flagstream owns: passing them through would break a delivery guarantee.
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "brokers are given in the URL"),
    ("metadata.broker.list", "brokers are given in the URL"),
    ("enable.idempotence", "the producer is always idempotent"),
    ("acks", "the producer always waits for all in-sync replicas"),
    (
        "request.required.acks",
        "the producer always waits for all in-sync replicas",
    ),
    ("message.timeout.ms", "use `timeout`"),
    ("delivery.timeout.ms", "use `timeout`"),
    ("compression.type", "use `compression`"),
    ("compression.codec", "use `compression`"),
    ("message.max.bytes", "use `max_message_bytes`"),
    (
        "allow.auto.create.topics",
        "use `create_topic=true` to create the topic",
    ),
];

/// Properties with a typed option of the same name (`security.protocol=…`, not
/// `rdkafka.security.protocol=…`).
const TYPED_PROPERTIES: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
];

/// The Kafka destination's own typed options (see the module doc for the table).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KafkaOptions {
    pub message_key: Option<PartitionKeySource>,
    pub compression: Option<Parsed<Compression>>,
    pub max_message_bytes: Option<Size>,
    #[serde(default)]
    pub create_topic: bool,
    pub partitions: Option<u32>,
    pub replication: Option<u32>,
    #[serde(rename = "security.protocol")]
    pub security_protocol: Option<Parsed<SecurityProtocol>>,
    #[serde(rename = "sasl.mechanism")]
    pub sasl_mechanism: Option<Parsed<SaslMechanism>>,
    #[serde(rename = "sasl.username")]
    pub sasl_username: Option<String>,
    #[serde(rename = "sasl.password")]
    pub sasl_password: Option<Secret>,
    #[serde(rename = "ssl.ca.location")]
    pub ssl_ca_location: Option<PathBuf>,
    #[serde(rename = "ssl.certificate.location")]
    pub ssl_certificate_location: Option<PathBuf>,
    #[serde(rename = "ssl.key.location")]
    pub ssl_key_location: Option<PathBuf>,
    #[serde(rename = "ssl.key.password")]
    pub ssl_key_password: Option<Secret>,
}

/// Every option of the Kafka destination: its own block, `timeout`, and `rdkafka.*`.
#[derive(Debug, Clone, Default)]
pub struct KafkaBlocks {
    pub options: KafkaOptions,
    pub request: RequestOptions,
    /// `rdkafka.NAME=value`, keyed by `NAME`.
    pub passthrough: BTreeMap<String, String>,
    /// Pass-through names whose values are secret (never echoed).
    pub passthrough_secret: BTreeSet<String>,
}

impl OptionBlocks for KafkaBlocks {
    fn take(map: &mut OptionMap) -> Result<Self, String> {
        let options = map.parse::<KafkaOptions>()?;
        let request = map.parse::<RequestOptions>()?;
        let (passthrough, passthrough_secret) = map.take_prefixed(PASSTHROUGH_PREFIX);
        Ok(KafkaBlocks {
            options,
            request,
            passthrough,
            passthrough_secret,
        })
    }
}

/// The variant of `all` whose name is `text`, ignoring ASCII case.
fn by_name<T: Copy>(all: &[T], name: fn(T) -> &'static str, text: &str) -> Option<T> {
    all.iter()
        .copied()
        .find(|variant| name(*variant).eq_ignore_ascii_case(text))
}

/// `compression=`: librdkafka's `compression.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        by_name(
            &[
                Compression::None,
                Compression::Gzip,
                Compression::Snappy,
                Compression::Lz4,
                Compression::Zstd,
            ],
            Compression::name,
            text,
        )
        .ok_or_else(|| {
            format!("unknown compression `{text}` (use lz4, zstd, gzip, snappy or none)")
        })
    }
}

/// `security.protocol=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

impl std::str::FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        by_name(
            &[
                SecurityProtocol::Plaintext,
                SecurityProtocol::Ssl,
                SecurityProtocol::SaslPlaintext,
                SecurityProtocol::SaslSsl,
            ],
            SecurityProtocol::name,
            text,
        )
        .ok_or_else(|| {
            format!(
                "unknown security.protocol `{text}` (use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
            )
        })
    }
}

/// `sasl.mechanism=` (GSSAPI and OAUTHBEARER are not built in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        by_name(
            &[
                SaslMechanism::Plain,
                SaslMechanism::ScramSha256,
                SaslMechanism::ScramSha512,
            ],
            SaslMechanism::name,
            text,
        )
        .ok_or_else(|| {
            format!(
                "unsupported sasl.mechanism `{text}` (use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        })
    }
}

/// Where messages go: `broker1:9092,broker2:9092/TOPIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTarget {
    pub brokers: Vec<String>,
    pub topic: String,
}

/// Kafka's default port, for brokers written without one.
const DEFAULT_PORT: u16 = 9092;
/// Longest topic name Kafka accepts.
const MAX_TOPIC_CHARS: usize = 249;

impl KafkaTarget {
    pub fn parse(target: &str) -> Result<Self, String> {
        let (brokers, topic) = target.split_once('/').ok_or_else(|| {
            "missing topic: use kafka://BROKER:PORT[,BROKER:PORT…]/TOPIC".to_string()
        })?;
        let brokers = brokers
            .split(',')
            .map(parse_broker)
            .collect::<Result<Vec<_>, _>>()?;
        let valid_topic = !topic.is_empty()
            && topic.len() <= MAX_TOPIC_CHARS
            && topic != "."
            && topic != ".."
            && topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_topic {
            return Err(format!(
                "`{topic}` is not a valid Kafka topic name (1-249 characters of a-z A-Z 0-9 . _ -)"
            ));
        }
        Ok(KafkaTarget {
            brokers,
            topic: topic.to_string(),
        })
    }
}

fn parse_broker(broker: &str) -> Result<String, String> {
    let (host, port) = match broker.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("broker `{broker}`: `{port}` is not a port"))?;
            (host, port)
        }
        None => (broker, DEFAULT_PORT),
    };
    if host.is_empty() || host.contains(['/', '?', '@', ' ']) {
        return Err(format!(
            "`{broker}` is not a broker address (HOST:PORT, comma-separated)"
        ));
    }
    Ok(format!("{host}:{port}"))
}

impl fmt::Display for KafkaTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kafka topic `{}`", self.topic)
    }
}

/// What the producer needs besides the properties.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerSettings {
    pub properties: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_message_bytes: usize,
}

/// The librdkafka properties for `blocks`, after checking that the options fit together.
pub fn producer_properties(
    target: &KafkaTarget,
    blocks: &KafkaBlocks,
    client_id: &str,
) -> Result<ProducerSettings, String> {
    let options = &blocks.options;
    if blocks.request.endpoint.is_some() {
        return Err("option `endpoint` does not apply: brokers are given in the URL".into());
    }
    if !options.create_topic && (options.partitions.is_some() || options.replication.is_some()) {
        return Err("options `partitions` and `replication` need `create_topic=true`".into());
    }
    let timeout = blocks.request.timeout()?;
    let max_message_bytes = options
        .max_message_bytes
        .map_or(DEFAULT_MAX_MESSAGE_BYTES, |size| size.0);
    if max_message_bytes < 2 * super::MESSAGE_OVERHEAD_BYTES {
        return Err(format!(
            "option `max_message_bytes` must be at least {} bytes",
            2 * super::MESSAGE_OVERHEAD_BYTES
        ));
    }
    let compression = options
        .compression
        .map_or_else(Compression::default, |c| c.0);
    let mut properties: Vec<(String, String)> = [
        ("bootstrap.servers", target.brokers.join(",")),
        ("client.id", client_id.to_string()),
        ("enable.idempotence", "true".into()),
        ("acks", "all".into()),
        ("compression.type", compression.name().into()),
        ("message.timeout.ms", timeout.as_millis().to_string()),
        ("message.max.bytes", max_message_bytes.to_string()),
        ("allow.auto.create.topics", "false".into()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect();
    properties.extend(security_properties(options)?);
    for (name, value) in &blocks.passthrough {
        if let Some((_, why)) = OWNED_PROPERTIES.iter().find(|(owned, _)| owned == name) {
            return Err(format!(
                "option `{PASSTHROUGH_PREFIX}{name}` is not allowed: {why}"
            ));
        }
        if TYPED_PROPERTIES.contains(&name.as_str()) {
            return Err(format!(
                "option `{PASSTHROUGH_PREFIX}{name}`: write `{name}=` instead"
            ));
        }
        properties.push((name.clone(), value.clone()));
    }
    Ok(ProducerSettings {
        properties,
        timeout,
        max_message_bytes,
    })
}

/// `security.protocol`, SASL and TLS properties, checked for consistency.
fn security_properties(options: &KafkaOptions) -> Result<Vec<(String, String)>, String> {
    let protocol = options
        .security_protocol
        .map_or_else(SecurityProtocol::default, |p| p.0);
    let mut properties = vec![("security.protocol", protocol.name().to_string())];
    if protocol.uses_sasl() {
        let mechanism = options.sasl_mechanism.ok_or_else(|| {
            format!(
                "security.protocol={} needs `sasl.mechanism` (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                protocol.name()
            )
        })?;
        let (Some(username), Some(password)) = (&options.sasl_username, &options.sasl_password)
        else {
            return Err(format!(
                "security.protocol={} needs `sasl.username` and `sasl.password`",
                protocol.name()
            ));
        };
        properties.push(("sasl.mechanism", mechanism.0.name().to_string()));
        properties.push(("sasl.username", username.clone()));
        properties.push(("sasl.password", password.expose().to_string()));
    } else if options.sasl_mechanism.is_some()
        || options.sasl_username.is_some()
        || options.sasl_password.is_some()
    {
        return Err(format!(
            "`sasl.*` options need security.protocol=SASL_SSL or SASL_PLAINTEXT (it is {})",
            protocol.name()
        ));
    }
    let files = [
        ("ssl.ca.location", &options.ssl_ca_location),
        (
            "ssl.certificate.location",
            &options.ssl_certificate_location,
        ),
        ("ssl.key.location", &options.ssl_key_location),
    ];
    let any_tls =
        files.iter().any(|(_, path)| path.is_some()) || options.ssl_key_password.is_some();
    if any_tls && !protocol.uses_tls() {
        return Err(format!(
            "`ssl.*` options need security.protocol=SSL or SASL_SSL (it is {})",
            protocol.name()
        ));
    }
    if options.ssl_certificate_location.is_some() != options.ssl_key_location.is_some() {
        return Err(
            "a client certificate needs both `ssl.certificate.location` and `ssl.key.location`"
                .into(),
        );
    }
    for (name, path) in files {
        if let Some(path) = path {
            properties.push((name, path.display().to_string()));
        }
    }
    if let Some(password) = &options.ssl_key_password {
        properties.push(("ssl.key.password", password.expose().to_string()));
    }
    Ok(properties
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect())
}

/// The option an operator wrote for librdkafka property `property`, for error messages.
pub fn option_for_property(property: &str, blocks: &KafkaBlocks) -> String {
    if blocks.passthrough.contains_key(property) {
        return format!("{PASSTHROUGH_PREFIX}{property}");
    }
    match property {
        "compression.type" => "compression".into(),
        "message.max.bytes" => "max_message_bytes".into(),
        "message.timeout.ms" => "timeout".into(),
        other => other.to_string(),
    }
}
