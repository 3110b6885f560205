//! S3 test helpers over the real `aws-sdk-s3` client (path-style, as moto needs): bucket
//! creation and reading every object under a prefix.

use super::StandIn;

pub async fn client(moto: &StandIn) -> aws_sdk_s3::Client {
    super::kinesis::use_test_credentials();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .load()
        .await;
    let s3 = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

pub async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str) {
    client.create_bucket().bucket(bucket).send().await.unwrap();
}

/// One stored object: key, metadata and bytes (gunzipped when gzip-encoded).
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub key: String,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub storage_class: Option<String>,
    pub server_side_encryption: Option<String>,
    /// The bytes as stored.
    pub raw: Vec<u8>,
    /// The bytes after gunzip (the same as `raw` for plain objects).
    pub text: String,
}

/// Every object under `prefix`, in key order.
pub async fn read_objects(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Vec<StoredObject> {
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    keys.sort();
    let mut objects = Vec::new();
    for key in keys {
        let got = client
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let content_type = got.content_type().map(str::to_string);
        let content_encoding = got.content_encoding().map(str::to_string);
        let storage_class = got.storage_class().map(|c| c.as_str().to_string());
        let server_side_encryption = got.server_side_encryption().map(|s| s.as_str().to_string());
        let raw = got.body.collect().await.unwrap().into_bytes().to_vec();
        let text = super::gunzipped_text(&raw);
        objects.push(StoredObject {
            key,
            content_type,
            content_encoding,
            storage_class,
            server_side_encryption,
            raw,
            text,
        });
    }
    objects
}
