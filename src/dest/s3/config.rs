//! S3 options and targets.

use std::fmt;

use serde::Deserialize;

use crate::dest::options::{Parsed, Size};

/// Smallest part of a multipart upload, except the last: 5 MiB (S3 limit).
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// Largest part: 5 GiB (S3 limit).
pub const MAX_PART_BYTES: usize = 5 * 1024 * 1024 * 1024;
/// Most parts of one upload (S3 limit).
pub const MAX_PARTS: usize = 10_000;
/// Objects above this size are uploaded in parts by default.
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// Default part size.
pub const DEFAULT_PART_BYTES: usize = 8 * 1024 * 1024;

/// Server-side encryption (`sse=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sse {
    /// `AES256`: S3-managed keys (SSE-S3).
    Aes256,
    /// `aws:kms`: KMS keys (SSE-KMS), the bucket's default key unless `kms_key_id` is given.
    Kms,
}

impl std::str::FromStr for Sse {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "AES256" => Ok(Sse::Aes256),
            "aws:kms" => Ok(Sse::Kms),
            other => Err(format!(
                "unknown `sse` value `{other}` (use AES256 or aws:kms)"
            )),
        }
    }
}

/// The S3 destination's own options (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct S3Options {
    pub path_style: Option<bool>,
    pub sse: Option<Parsed<Sse>>,
    pub kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub multipart_threshold: Option<Size>,
    pub part_size: Option<Size>,
}

impl S3Options {
    /// Check option combinations and ranges; returns (multipart threshold, part size).
    pub fn upload_sizes(&self) -> Result<(usize, usize), String> {
        if self.kms_key_id.is_some() && self.sse.map(|Parsed(s)| s) != Some(Sse::Kms) {
            return Err("option `kms_key_id` needs `sse=aws:kms`".into());
        }
        if let Some(class) = &self.storage_class {
            let known = aws_sdk_s3::types::StorageClass::values();
            if !known.contains(&class.as_str()) {
                return Err(format!(
                    "unknown `storage_class` `{class}` (use one of {})",
                    known.join(", ")
                ));
            }
        }
        let part = self.part_size.map_or(DEFAULT_PART_BYTES, |Size(s)| s);
        if !(MIN_PART_BYTES..=MAX_PART_BYTES).contains(&part) {
            return Err("option `part_size` must be between 5MiB and 5GiB (S3 limits)".into());
        }
        let threshold = self
            .multipart_threshold
            .map_or(DEFAULT_MULTIPART_THRESHOLD.max(part), |Size(s)| s);
        if threshold < part {
            return Err("option `multipart_threshold` must be at least `part_size`".into());
        }
        Ok((threshold, part))
    }
}

/// The part size for an object of `len` bytes: `part_size`, grown when needed so the upload
/// stays within S3's 10,000 parts.
pub fn part_size_for(len: usize, part_size: usize) -> usize {
    part_size.max(len.div_ceil(MAX_PARTS))
}

/// `s3://BUCKET/PREFIX`: the bucket and the key prefix (without surrounding `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketTarget {
    pub bucket: String,
    pub prefix: String,
}

impl BucketTarget {
    pub fn parse(target: &str) -> Result<Self, String> {
        let (bucket, prefix) = target.split_once('/').unwrap_or((target, ""));
        // Bucket naming rules: 3-63 characters of a-z 0-9 . -, starting and ending with a
        // letter or digit.
        let edge_ok =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            && edge_ok(bucket.chars().next())
            && edge_ok(bucket.chars().last());
        if !valid {
            return Err(format!(
                "`{bucket}` is not a valid bucket name (3-63 characters of a-z 0-9 . -); use s3://BUCKET/PREFIX"
            ));
        }
        Ok(BucketTarget {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }
}

impl fmt::Display for BucketTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3 bucket `{}`", self.bucket)
    }
}
