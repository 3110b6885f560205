//! Unit tests: key-pair JWTs against known values, identifiers, the MERGE text, the
//! mismatch check.

use super::auth::RsaKey;
use super::config::{ident, SnowflakeTarget};
use super::load::{bindings, merge_statement};
use super::tables::mismatch;
use crate::dest::postgres::{warehouse_tables, Cell, Row};

const KEY: &str = include_str!("testdata/rsa_key.p8");
/// `openssl rsa -in testdata/rsa_key.p8 -pubout -outform DER | openssl dgst -sha256 -binary
/// | openssl enc -base64` (Snowflake's documented way to compute the fingerprint).
const OPENSSL_FINGERPRINT: &str = "SHA256:XR4bTTTMSB/6vZtWDBh/ed6MNcN3qerZbaq955D9m9A=";

#[test]
fn the_key_fingerprint_is_what_openssl_computes() {
    let key = RsaKey::from_pem(KEY).unwrap();
    assert_eq!(key.fingerprint(), OPENSSL_FINGERPRINT);
    assert!(!format!("{key:?}").contains("PRIVATE"));
}

#[test]
fn the_login_jwt_is_byte_for_byte_what_pyjwt_makes() {
    // testdata/jwt_pyjwt_2.15.1.txt: PyJWT 2.15.1 (the Snowflake Python connector's JWT
    // library) `jwt.encode({iss, sub, iat, exp}, key, algorithm="RS256")` with this key.
    let expected = include_str!("testdata/jwt_pyjwt_2.15.1.txt").trim();
    let key = RsaKey::from_pem(KEY).unwrap();
    assert_eq!(
        key.jwt("MYACCOUNT", "flagstream", 1_700_000_000).unwrap(),
        key.jwt_at(
            &format!("MYACCOUNT.FLAGSTREAM.{OPENSSL_FINGERPRINT}"),
            "MYACCOUNT.FLAGSTREAM",
            1_700_000_000,
            1_700_003_540
        )
    );
    assert_eq!(
        key.jwt("MYACCOUNT", "flagstream", 1_700_000_000).unwrap(),
        expected
    );
}

#[test]
fn bad_keys_are_named_and_never_quoted() {
    let err = RsaKey::from_pem("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n").unwrap_err();
    assert!(err.contains("encrypted"), "{err}");
    let err = RsaKey::from_pem("not a key at all SECRETSTUFF").unwrap_err();
    assert!(
        err.contains("private_key") && !err.contains("SECRETSTUFF"),
        "{err}"
    );
}

#[test]
fn targets_and_identifiers() {
    let target = SnowflakeTarget::parse("xy12345.us-east-1/analytics/flags").unwrap();
    assert_eq!(target.account_name(), "XY12345");
    assert_eq!(
        target.public_endpoint(),
        "https://xy12345.us-east-1.snowflakecomputing.com"
    );
    assert!(SnowflakeTarget::parse("acct/db").is_err());
    assert_eq!(ident("flags"), "\"FLAGS\"");
    assert_eq!(ident("My \"Schema\""), "\"My \"\"Schema\"\"\"");
}

#[test]
fn the_merge_inserts_only_missing_keys_with_typed_conversions() {
    let target = SnowflakeTarget::parse("a/db/s").unwrap();
    let tables = warehouse_tables("s");
    let sql = merge_statement(&target, &tables[0], 2);
    assert!(
        sql.starts_with("MERGE INTO \"DB\".\"S\".\"EVALUATION_EVENTS\" t USING"),
        "{sql}"
    );
    assert!(
        sql.contains("PARSE_JSON(column10) AS \"CONTEXT_ATTRIBUTES\""),
        "{sql}"
    );
    assert!(
        sql.contains("column23::TIMESTAMP_TZ AS \"TIMESTAMP\""),
        "{sql}"
    );
    assert!(
        sql.contains("ON t.\"EVENT_ID\" = s.\"EVENT_ID\" AND EQUAL_NULL(t.\"CONTEXT_KIND\", s.\"CONTEXT_KIND\")"),
        "{sql}"
    );
    assert!(sql.contains("WHEN NOT MATCHED THEN INSERT"), "{sql}");
    assert_eq!(sql.matches('?').count(), 2 * tables[0].columns.len());
}

#[test]
fn rows_repeated_in_a_batch_are_bound_once() {
    let tables = warehouse_tables("s");
    let table = &tables[2]; // summary_counters: (event_id, flag_key, counter_index)
    let row = |id: &str, counter: i64| Row {
        index: 0,
        event_id: id.into(),
        cells: table
            .columns
            .iter()
            .map(|c| match c.name {
                "event_id" => Cell::Text(id.into()),
                "counter_index" => Cell::Int(counter),
                _ => Cell::Null,
            })
            .collect(),
    };
    let (count, values) = bindings(table, &[row("a", 0), row("a", 1), row("a", 0)]);
    assert_eq!(count, 2);
    assert_eq!(values.len(), 2 * table.columns.len());
}

#[test]
fn mismatches_name_the_column() {
    let tables = warehouse_tables("s");
    let table = &tables[1];
    let mut columns: Vec<Vec<Option<String>>> = table
        .columns
        .iter()
        .map(|c| {
            vec![
                Some(c.name.to_ascii_uppercase()),
                Some(super::tables::reported_type(c.ty).into()),
                Some(if c.nullable { "YES" } else { "NO" }.into()),
            ]
        })
        .collect();
    assert_eq!(mismatch(table, &columns), None);
    columns[8][1] = Some("TEXT".into());
    let reason = mismatch(table, &columns).unwrap();
    assert!(
        reason.contains("metric_value") && reason.contains("TEXT"),
        "{reason}"
    );
    columns[8][1] = Some("FLOAT".into());
    columns.push(vec![
        Some("EXTRA".into()),
        Some("TEXT".into()),
        Some("NO".into()),
    ]);
    assert!(mismatch(table, &columns).unwrap().contains("EXTRA"));
}
