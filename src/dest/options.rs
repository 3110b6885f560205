//! Typed destination options, with key accounting.
//!
//! Options reach a destination as text: query parameters of a `--dest` URL, or keys of a
//! `[[destination]]` TOML table (whose numbers and bools the config loader writes as text).
//! Each destination declares its options as serde structs ("blocks"); [`OptionMap::parse`]
//! fills one block from the map, parsing every value from text (`true`, `500`, `8MiB`, `5s`).
//! A destination's options are a tuple of blocks ([`OptionBlocks`]): its own struct plus the
//! shared ones, so every destination spells common options the same way —
//! [`RequestOptions`] (`timeout`, `endpoint`), the credential blocks of `dest::aws` /
//! `dest::gcp`, sizes ([`Size`], `bytesize`) and durations ([`HumanDuration`], `humantime`).
//!
//! ## Why not `#[serde(flatten)]` + `deny_unknown_fields`
//!
//! serde cannot combine the two: a flattening struct buffers every key it does not know and
//! silently drops what no flattened block takes, so a typo would become a default. Instead
//! [`OptionMap`] is its own small `Deserializer`: a block is deserialized as a struct, which
//! tells the deserializer its field names; the map marks those keys as used. Blocks are
//! parsed one after the other from the same map, and [`OptionMap::finish`] rejects any key no
//! block claimed, naming the key and the destination type.
//!
//! Invariant: an error message echoes an option's value only when the option is not secret
//! (see `dest::secrets`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::Deserialize;

use super::secrets::Secret;

/// Why a value did not deserialize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError(pub String);

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OptionError {}

impl de::Error for OptionError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        OptionError(msg.to_string())
    }
}

/// The options of one destination, consumed block by block.
#[derive(Debug)]
pub struct OptionMap {
    scheme: String,
    values: BTreeMap<String, String>,
    /// Keys whose values must never be echoed.
    secret: BTreeSet<String>,
    used: BTreeSet<String>,
}

impl OptionMap {
    pub fn new(scheme: &str, values: BTreeMap<String, String>, secret: BTreeSet<String>) -> Self {
        OptionMap {
            scheme: scheme.to_string(),
            values,
            secret,
            used: BTreeSet::new(),
        }
    }

    /// Fill block `T` (a struct) from the options, marking its fields as used.
    pub fn parse<T: DeserializeOwned>(&mut self) -> Result<T, String> {
        T::deserialize(BlockDeserializer { map: self }).map_err(|err| err.0)
    }

    /// The options no block claimed (for the next layer to take).
    pub fn into_unused(self) -> BTreeMap<String, String> {
        let used = self.used;
        self.values
            .into_iter()
            .filter(|(key, _)| !used.contains(key))
            .collect()
    }

    /// Take every option whose key starts with `prefix` (marking it used), keyed by the rest
    /// of the key: open-ended options no struct can declare, such as Kafka's
    /// `rdkafka.NAME=value` or a webhook's `header.X-Team=…`. Returns the keys whose values
    /// are secret beside the values.
    pub fn take_prefixed(&mut self, prefix: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
        let mut taken = BTreeMap::new();
        let mut secret = BTreeSet::new();
        for (key, value) in &self.values {
            if let Some(rest) = key.strip_prefix(prefix) {
                self.used.insert(key.clone());
                taken.insert(rest.to_string(), value.clone());
                if self.secret.contains(key) {
                    secret.insert(rest.to_string());
                }
            }
        }
        (taken, secret)
    }

    /// Fail if some option was claimed by no block, naming the keys and the destination type.
    pub fn finish(self) -> Result<(), String> {
        let unknown: Vec<&str> = self
            .values
            .keys()
            .filter(|key| !self.used.contains(*key))
            .map(String::as_str)
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let quoted: Vec<String> = unknown.iter().map(|key| format!("`{key}`")).collect();
        Err(format!(
            "unknown option {} for destination type `{}`",
            quoted.join(", "),
            self.scheme
        ))
    }
}

/// A destination's options: a tuple of blocks, each parsed with [`OptionMap::parse`].
pub trait OptionBlocks: Sized {
    fn take(map: &mut OptionMap) -> Result<Self, String>;
}

impl OptionBlocks for () {
    fn take(_: &mut OptionMap) -> Result<Self, String> {
        Ok(())
    }
}

macro_rules! option_blocks {
    ($($block:ident),+) => {
        impl<$($block: DeserializeOwned),+> OptionBlocks for ($($block,)+) {
            fn take(map: &mut OptionMap) -> Result<Self, String> {
                Ok(($(map.parse::<$block>()?,)+))
            }
        }
    };
}
option_blocks!(A);
option_blocks!(A, B);
option_blocks!(A, B, C);
option_blocks!(A, B, C, D);

struct BlockDeserializer<'m> {
    map: &'m mut OptionMap,
}

impl<'de> de::Deserializer<'de> for BlockDeserializer<'_> {
    type Error = OptionError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, OptionError> {
        Err(OptionError(
            "destination options must be declared as a struct".into(),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, OptionError> {
        let map = self.map;
        let mut entries = Vec::new();
        for (key, value) in &map.values {
            if fields.contains(&key.as_str()) {
                map.used.insert(key.clone());
                entries.push((key.as_str(), value.as_str(), map.secret.contains(key)));
            }
        }
        visitor.visit_map(Entries {
            entries: entries.into_iter(),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

struct Entries<'a> {
    entries: std::vec::IntoIter<(&'a str, &'a str, bool)>,
    value: Option<(&'a str, &'a str, bool)>,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = OptionError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, OptionError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(entry);
        seed.deserialize(entry.0.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, OptionError> {
        let (key, value, secret) = self
            .value
            .take()
            .ok_or_else(|| OptionError("value without a key".into()))?;
        seed.deserialize(Text(value)).map_err(|err| {
            if secret {
                OptionError(format!("option `{key}`: invalid value: {err}"))
            } else {
                OptionError(format!("option `{key}`: invalid value `{value}`: {err}"))
            }
        })
    }
}

/// One option value: text, parsed into whatever type the block's field asks for.
struct Text<'a>(&'a str);

impl Text<'_> {
    fn number<T: std::str::FromStr>(&self) -> Result<T, OptionError>
    where
        T::Err: fmt::Display,
    {
        self.0
            .trim()
            .parse()
            .map_err(|err| OptionError(format!("expected a number: {err}")))
    }
}

macro_rules! parse_number {
    ($($method:ident => $visit:ident: $ty:ty),+ $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
            visitor.$visit(self.number::<$ty>()?)
        })+
    };
}

impl<'de> de::Deserializer<'de> for Text<'_> {
    type Error = OptionError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        visitor.visit_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        match self.0.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => visitor.visit_bool(true),
            "false" | "0" | "no" | "off" => visitor.visit_bool(false),
            _ => Err(OptionError("expected `true` or `false`".into())),
        }
    }

    parse_number! {
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, OptionError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, OptionError> {
        visitor.visit_enum(self.0.trim().into_deserializer())
    }

    /// Lists are comma-separated: `a,b,c`.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        let items: Vec<Text<'_>> = self
            .0
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(Text)
            .collect();
        visitor.visit_seq(de::value::SeqDeserializer::new(items.into_iter()))
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct tuple tuple_struct map
        struct identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, OptionError> for Text<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// A duration option: `250ms`, `5s`, `1h 30m` (humantime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// Deserialize a value written as text with `parse`.
fn from_text<'de, D, T>(
    deserializer: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(de::Error::custom)
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer, |text| {
            super::units::parse_duration(text).map(HumanDuration)
        })
    }
}

/// A byte-size option: `65536`, `512KiB`, `8MiB`, `10MB` (bytesize).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer, |text| {
            super::units::parse_byte_size(text).map(Size)
        })
    }
}

/// Any option type with a `FromStr` (an enum like `Schema`), parsed from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<T>(pub T);

impl<'de, T> Deserialize<'de> for Parsed<T>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer, |text| {
            text.trim()
                .parse()
                .map(Parsed)
                .map_err(|err: T::Err| err.to_string())
        })
    }
}

/// An absolute `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(pub url::Url);

impl Endpoint {
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    pub fn is_plaintext(&self) -> bool {
        self.0.scheme() == "http"
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(text.trim()).map_err(|err| format!("not a URL: {err}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "expected an http:// or https:// URL, got scheme `{}`",
                url.scheme()
            ));
        }
        Ok(Endpoint(url))
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer, str::parse)
    }
}

/// Options every request-making destination shares.
///
/// | option | meaning | default |
/// |---|---|---|
/// | `timeout` | how long one request may take (humantime) | the destination's, usually `30s` |
/// | `endpoint` | endpoint override (regional/VPC endpoint, emulator, stand-in) | the service's |
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestOptions {
    timeout: Option<HumanDuration>,
    pub endpoint: Option<Endpoint>,
}

/// Default request timeout of network destinations.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default TCP (and TLS) connect timeout of network destinations.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl RequestOptions {
    /// The request timeout (`timeout`, else [`DEFAULT_TIMEOUT`]); never zero.
    pub fn timeout(&self) -> Result<Duration, String> {
        match self.timeout {
            None => Ok(DEFAULT_TIMEOUT),
            Some(HumanDuration(timeout)) if timeout.is_zero() => {
                Err("option `timeout` must be longer than 0s".into())
            }
            Some(HumanDuration(timeout)) => Ok(timeout),
        }
    }
}

/// Options for destinations that authenticate with a static token or a user and password
/// (HTTP APIs). All three are secrets: give them as `env:NAME` or `file:PATH`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenCredentials {
    pub token: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Fast,
        Safe,
    }

    #[derive(Debug, Deserialize)]
    struct Own {
        #[serde(default)]
        aggregate: bool,
        count: Option<u32>,
        mode: Option<Mode>,
        size: Option<Size>,
        kinds: Option<Vec<String>>,
        key: Option<Secret>,
    }

    fn map(pairs: &[(&str, &str)]) -> OptionMap {
        let values = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OptionMap::new("demo", values, BTreeSet::from(["key".to_string()]))
    }

    #[test]
    fn blocks_take_their_keys_from_text_and_leftovers_are_named() {
        let mut options = map(&[
            ("aggregate", "true"),
            ("count", "12"),
            ("mode", "safe"),
            ("size", "8MiB"),
            ("kinds", "a, b"),
            ("timeout", "5s"),
            ("endpoint", "http://127.0.0.1:9/"),
            ("colour", "blue"),
        ]);
        let (own, request): (Own, RequestOptions) = OptionBlocks::take(&mut options).unwrap();
        assert!(own.aggregate);
        assert_eq!(own.count, Some(12));
        assert_eq!(own.mode, Some(Mode::Safe));
        assert_eq!(own.size, Some(Size(8 << 20)));
        assert_eq!(own.kinds, Some(vec!["a".to_string(), "b".to_string()]));
        assert!(own.key.is_none());
        assert_eq!(request.timeout().unwrap(), Duration::from_secs(5));
        assert_eq!(
            request.endpoint.as_ref().map(Endpoint::as_str),
            Some("http://127.0.0.1:9")
        );
        let err = options.finish().unwrap_err();
        assert!(err.contains("`colour`") && err.contains("`demo`"), "{err}");
    }

    #[test]
    fn bad_values_name_the_option_and_secrets_are_not_echoed() {
        for (key, value, needle) in [
            ("aggregate", "maybe", "maybe"),
            ("count", "-1", "count"),
            ("mode", "reckless", "reckless"),
            ("size", "4 parsecs", "parsecs"),
        ] {
            let err = map(&[(key, value)]).parse::<Own>().unwrap_err();
            assert!(err.contains(key) && err.contains(needle), "{err}");
        }
        let mut secret = map(&[("key", "hunter2"), ("count", "x")]);
        let err = secret.parse::<Own>().unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = map(&[("endpoint", "ftp://x")])
            .parse::<RequestOptions>()
            .unwrap_err();
        assert!(err.contains("endpoint") && err.contains("ftp"), "{err}");
        let zero = map(&[("timeout", "0s")]).parse::<RequestOptions>().unwrap();
        assert!(zero.timeout().unwrap_err().contains("timeout"));
    }

    #[test]
    fn no_options_is_fine_and_defaults_apply() {
        let mut options = map(&[]);
        let (own,): (Own,) = OptionBlocks::take(&mut options).unwrap();
        assert!(!own.aggregate && own.count.is_none());
        options.finish().unwrap();
        let request = RequestOptions::default();
        assert_eq!(request.timeout().unwrap(), DEFAULT_TIMEOUT);
    }
}
