//! GCS options, bucket targets and the Cloud Storage limits they are checked against.

use std::fmt;

use serde::Deserialize;

/// Largest object, and largest single upload request, Cloud Storage accepts: 5 TiB
/// (<https://cloud.google.com/storage/quotas>, "Objects").
pub const MAX_OBJECT_BYTES: u64 = 5 << 40;

/// Storage classes an object may be written with (`storage_class=`).
pub const STORAGE_CLASSES: [&str; 4] = ["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"];

/// The GCS destination's own options (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GcsOptions {
    pub storage_class: Option<String>,
    pub kms_key: Option<String>,
}

impl GcsOptions {
    /// Check the values (names from Cloud Storage's documentation).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(class) = &self.storage_class {
            if !STORAGE_CLASSES.contains(&class.as_str()) {
                return Err(format!(
                    "unknown `storage_class` `{class}` (use one of {})",
                    STORAGE_CLASSES.join(", ")
                ));
            }
        }
        if let Some(key) = &self.kms_key {
            let parts: Vec<&str> = key.split('/').collect();
            let shaped = matches!(
                parts.as_slice(),
                ["projects", p, "locations", l, "keyRings", r, "cryptoKeys", k]
                    if ![p, l, r, k].iter().any(|s| s.is_empty())
            );
            if !shaped {
                return Err(format!(
                    "option `kms_key` must be projects/P/locations/L/keyRings/R/cryptoKeys/K (got `{key}`)"
                ));
            }
        }
        Ok(())
    }
}

/// `gs://BUCKET/PREFIX`: the bucket and the object name prefix (without surrounding `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsTarget {
    pub bucket: String,
    pub prefix: String,
}

impl GcsTarget {
    pub fn parse(target: &str) -> Result<Self, String> {
        let (bucket, prefix) = target.split_once('/').unwrap_or((target, ""));
        if !valid_bucket_name(bucket) {
            return Err(format!(
                "`{bucket}` is not a valid bucket name (3-63 characters of a-z 0-9 - _ ., or up \
                 to 222 with dots, starting and ending with a letter or digit); use \
                 gs://BUCKET/PREFIX"
            ));
        }
        Ok(GcsTarget {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The bucket as the client names it (`projects/_/buckets/BUCKET`).
    pub fn bucket_path(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }
}

/// Cloud Storage's bucket naming rules: a-z 0-9 `-` `_` `.`; 3-63 characters, or up to 222
/// when dotted with every dot-separated part at most 63; a letter or digit at both ends.
fn valid_bucket_name(bucket: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let max_len = if bucket.contains('.') { 222 } else { 63 };
    (3..=max_len).contains(&bucket.len())
        && bucket.split('.').all(|part| part.len() <= 63)
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && edge_ok(bucket.chars().next())
        && edge_ok(bucket.chars().last())
}

impl fmt::Display for GcsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GCS bucket `{}`", self.bucket)
    }
}
