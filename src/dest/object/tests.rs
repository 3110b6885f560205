use std::io::Read;

use super::*;
use crate::dest::BatchItem;

/// 2026-11-29T07:59:59.999Z and one millisecond later.
const LAST_MS_OF_HOUR_7: u64 = 1_795_939_199_999;

fn item(i: usize, payload: &str, environment: &str, received_at_ms: u64) -> BatchItem {
    BatchItem {
        event_id: format!("e{i}").into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        kind: "feature".into(),
        key: Some("flag".into()),
        context_key: Some("u1".into()),
        environment: environment.into(),
        received_at_ms,
    }
}

fn batch(items: Vec<BatchItem>) -> Batch {
    Batch {
        id: "s3-10-12".into(),
        schema: Schema::GoFeatureFlag,
        items,
        lines: None,
    }
}

fn writer(options: ObjectOptions, defaults: &[Partition]) -> ObjectWriter {
    options
        .writer("/exports/flags/", defaults, Schema::GoFeatureFlag)
        .unwrap()
}

/// Each object's key with the indices of the batch items it holds.
fn keys_and_items(objects: &[EncodedObject]) -> Vec<(&str, &[usize])> {
    objects
        .iter()
        .map(|o| (o.key.as_str(), o.items.as_slice()))
        .collect()
}

fn parsed<T: std::str::FromStr<Err = String>>(text: &str) -> Option<Parsed<T>> {
    Some(Parsed(text.parse().unwrap()))
}

#[test]
fn keys_are_prefix_hive_partitions_and_the_batch_id() {
    let w = writer(
        ObjectOptions::default(),
        &[Partition::Date, Partition::Hour],
    );
    let objects = w
        .encode(&batch(vec![item(0, "{}", "prod", LAST_MS_OF_HOUR_7)]))
        .unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(
        objects[0].key,
        "exports/flags/dt=2026-11-29/hour=07/s3-10-12.ndjson"
    );
    assert_eq!(objects[0].content_type, "application/x-ndjson");
    assert_eq!(objects[0].content_encoding, None);
}

#[test]
fn a_batch_spanning_partitions_becomes_one_object_per_partition_deterministically() {
    let options = ObjectOptions {
        partitions: parsed("environment,dt,hour"),
        ..ObjectOptions::default()
    };
    let w = writer(options, &[]);
    let b = batch(vec![
        item(0, "{\"n\":0}", "prod", LAST_MS_OF_HOUR_7),
        item(1, "{\"n\":1}", "prod", LAST_MS_OF_HOUR_7 + 1),
        item(2, "{\"n\":2}", "a/b c", LAST_MS_OF_HOUR_7),
        item(3, "{\"n\":3}", "prod", LAST_MS_OF_HOUR_7 - 5),
    ]);
    let objects = w.encode(&b).unwrap();
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "exports/flags/environment=prod/dt=2026-11-29/hour=07/s3-10-12.ndjson",
            "exports/flags/environment=prod/dt=2026-11-29/hour=08/s3-10-12.ndjson",
            "exports/flags/environment=a%2Fb%20c/dt=2026-11-29/hour=07/s3-10-12.ndjson",
        ]
    );
    assert_eq!(objects[0].items, [0, 3]);
    assert_eq!(objects[0].body, "{\"n\":0}\n{\"n\":3}\n");
    // Re-sending the same batch yields the very same objects (exactly once by overwrite).
    assert_eq!(w.encode(&b).unwrap(), objects);
}

/// Time-only partitions by receive time take the previous item's group when it is in the
/// same hour: items that alternate between hours (and days) still land in their own hour.
#[test]
fn items_alternating_between_hours_land_in_their_own_hour() {
    let options = ObjectOptions {
        partitions: parsed("dt,hour"),
        ..ObjectOptions::default()
    };
    let w = writer(options, &[]);
    const DAY_MS: u64 = 24 * 3_600_000;
    let times = [
        LAST_MS_OF_HOUR_7,
        LAST_MS_OF_HOUR_7 + 1,
        LAST_MS_OF_HOUR_7,
        LAST_MS_OF_HOUR_7 + 1,
        LAST_MS_OF_HOUR_7 + DAY_MS,
        LAST_MS_OF_HOUR_7 + 1,
    ];
    let items = times
        .iter()
        .enumerate()
        .map(|(n, &ms)| item(n, &format!("{{\"n\":{n}}}"), "prod", ms))
        .collect();
    let objects = w.encode(&batch(items)).unwrap();
    let groups = keys_and_items(&objects);
    assert_eq!(
        groups,
        [
            (
                "exports/flags/dt=2026-11-29/hour=07/s3-10-12.ndjson",
                &[0, 2][..]
            ),
            (
                "exports/flags/dt=2026-11-29/hour=08/s3-10-12.ndjson",
                &[1, 3, 5][..]
            ),
            (
                "exports/flags/dt=2026-11-30/hour=07/s3-10-12.ndjson",
                &[4][..]
            ),
        ]
    );
}

#[test]
fn event_time_partitions_read_the_payload_and_fall_back_to_receive_time() {
    let options = ObjectOptions {
        partitions: parsed("dt,hour"),
        partition_time: Some(PartitionTime::Event),
        ..ObjectOptions::default()
    };
    let w = writer(options, &[]);
    // go-feature-flag creationDate is in seconds: 2024-05-29T16:26:40Z.
    let b = batch(vec![
        item(
            0,
            r#"{"creationDate":1717000000}"#,
            "prod",
            LAST_MS_OF_HOUR_7,
        ),
        item(1, r#"{"kind":"feature"}"#, "prod", LAST_MS_OF_HOUR_7),
    ]);
    let keys: Vec<String> = w.encode(&b).unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(
        keys,
        [
            "exports/flags/dt=2024-05-29/hour=16/s3-10-12.ndjson",
            "exports/flags/dt=2026-11-29/hour=07/s3-10-12.ndjson",
        ]
    );
    assert_eq!(
        layout::event_time_ms(
            Schema::LaunchDarkly,
            br#"{"event":{"creationDate":1717000000123}}"#
        ),
        Some(1_717_000_000_123)
    );
    assert_eq!(layout::event_time_ms(Schema::Segment, b"{}"), None);
}

#[test]
fn the_flat_layout_is_one_object_of_every_item_in_order_and_no_items_no_object() {
    let w = writer(ObjectOptions::default(), &[]);
    let items = vec![
        item(0, "{}", "a", 0),
        item(1, "{}", "b", 7_200_000),
        item(2, "{}", "a", 0),
    ];
    let objects = w.encode(&batch(items)).unwrap();
    assert_eq!(
        keys_and_items(&objects),
        vec![("exports/flags/s3-10-12.ndjson", &[0usize, 1, 2][..])]
    );
    assert!(w.encode(&batch(Vec::new())).unwrap().is_empty());
}

#[test]
fn ndjson_bodies_start_on_a_block_boundary_for_direct_io() {
    let w = writer(ObjectOptions::default(), &[Partition::Hour]);
    let mut items: Vec<BatchItem> = (0..300).map(|i| item(i, "{\"n\":1}", "p", 0)).collect();
    items[299].received_at_ms = 3_600_000; // a second object, in the next hour
    let objects = w.encode(&batch(items)).unwrap();
    assert_eq!(objects.len(), 2);
    for object in &objects {
        let address = object.body.as_ptr() as usize;
        assert_eq!(address % super::body_pool::BODY_ALIGN, 0, "{}", object.key);
    }
    assert_eq!(&objects[1].body[..], b"{\"n\":1}\n");
}

/// `items` laid out as the batcher lays them out: back to back in one arena, each followed by
/// a newline, the arena starting on a block boundary.
fn laid_out(items: Vec<BatchItem>) -> Batch {
    let mut arena = Vec::with_capacity(1 << 16);
    let pad = (BODY_ALIGN - arena.as_ptr() as usize % BODY_ALIGN) % BODY_ALIGN;
    arena.resize(pad, 0);
    let mut ranges = Vec::new();
    for item in &items {
        ranges.push(arena.len()..arena.len() + item.payload.len());
        arena.extend_from_slice(&item.payload);
        arena.push(b'\n');
    }
    let arena = Bytes::from(arena);
    let items = items
        .into_iter()
        .zip(ranges)
        .map(|(item, range)| BatchItem {
            payload: arena.slice(range),
            ..item
        })
        .collect();
    Batch {
        lines: Some(arena.slice(pad..)),
        ..batch(items)
    }
}

#[test]
fn ndjson_of_laid_out_items_is_the_arena_itself_and_the_same_text() {
    let rows = |n: usize| (0..n).map(|i| item(i, &format!("{{\"n\":{i}}}"), "p", 0));
    let w = writer(ObjectOptions::default(), &[Partition::Hour]);
    let mut items: Vec<BatchItem> = rows(300).collect();
    items[299].received_at_ms = 3_600_000; // the last item in the next hour: a second object
    let laid = laid_out(items.clone());
    let copied = w.encode(&batch(items)).unwrap();
    let objects = w.encode(&laid).unwrap();
    assert_eq!(objects.len(), 2);
    let arena = laid.lines.as_ref().unwrap();
    assert_eq!(
        objects[0].body.as_ptr(),
        arena.as_ptr(),
        "the arena, not a copy"
    );
    assert_eq!(
        objects[0].body.as_ptr() as usize % BODY_ALIGN,
        0,
        "direct I/O from it"
    );
    for (sent, encoded) in objects.iter().zip(&copied) {
        assert_eq!(sent.key, encoded.key);
        assert_eq!(sent.items, encoded.items);
        assert_eq!(sent.body, encoded.body, "{}", sent.key);
    }

    // Interleaved partitions are not runs of the arena: encoded as before.
    let mut alternating: Vec<BatchItem> = rows(10).collect();
    for (i, item) in alternating.iter_mut().enumerate() {
        item.received_at_ms = (i as u64 % 2) * 3_600_000;
    }
    let laid = laid_out(alternating.clone());
    let objects = w.encode(&laid).unwrap();
    let arena = laid.lines.as_ref().unwrap().as_ptr_range();
    for (sent, encoded) in objects.iter().zip(w.encode(&batch(alternating)).unwrap()) {
        assert!(!arena.contains(&sent.body.as_ptr()), "{}", sent.key);
        assert_eq!(sent.body, encoded.body);
    }
}

/// The NDJSON of [`two_rows_as`].
const TWO_ROWS: &str = "{\"a\":1}\n{\"b\":2}\n";

/// The one object two rows make in `format`.
fn two_rows_as(format: &str) -> EncodedObject {
    let options = ObjectOptions {
        format: parsed(format),
        file_name: Some("flags-{batch_id}.{ext}".into()),
        ..ObjectOptions::default()
    };
    let mut objects = writer(options, &[])
        .encode(&batch(vec![
            item(0, "{\"a\":1}", "p", 0),
            item(1, "{\"b\":2}", "p", 0),
        ]))
        .unwrap();
    assert_eq!(objects.len(), 1);
    objects.remove(0)
}

#[test]
fn ndjson_gz_is_gzip_of_the_ndjson_and_says_so() {
    let object = two_rows_as("ndjson.gz");
    assert_eq!(object.key, "exports/flags/flags-s3-10-12.ndjson.gz");
    assert_eq!(object.content_encoding, Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&object.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, TWO_ROWS);
}

#[test]
fn ndjson_zst_is_one_checksummed_zstd_frame_of_the_ndjson_and_says_so() {
    let object = two_rows_as("ndjson.zst");
    assert_eq!(object.key, "exports/flags/flags-s3-10-12.ndjson.zst");
    assert_eq!(object.content_type, "application/x-ndjson");
    assert_eq!(object.content_encoding, Some("zstd"));
    let body = &object.body[..];
    assert_eq!(zstd::decode_all(body).unwrap(), TWO_ROWS.as_bytes());
    assert_eq!(
        zstd::zstd_safe::find_frame_compressed_size(body).ok(),
        Some(body.len()),
        "one frame"
    );
    // RFC 8878 3.1.1.1.1: after the 4-byte magic number, bit 2 of the frame header
    // descriptor says the frame ends with a checksum of its content.
    assert_ne!(body[4] & 0b100, 0, "the frame carries a content checksum");
}

#[test]
fn gzip_level_trades_cpu_for_size() {
    let rows: Vec<BatchItem> = (0..2_000)
        .map(|i| {
            item(
                i,
                &format!("{{\"n\":{},\"k\":\"user-{}\"}}", i * 7 % 100, i % 37),
                "p",
                0,
            )
        })
        .collect();
    let size = |level: Option<u32>| {
        let options = ObjectOptions {
            format: parsed("ndjson.gz"),
            gzip_level: level,
            ..ObjectOptions::default()
        };
        let objects = writer(options, &[]).encode(&batch(rows.clone())).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&objects[0].body[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text.lines().count(), rows.len());
        objects[0].body.len()
    };
    let (default, one, nine) = (size(None), size(Some(1)), size(Some(9)));
    assert_eq!(default, one, "the default is level 1");
    assert!(
        nine < one,
        "level 9 ({nine} B) is smaller than level 1 ({one} B)"
    );
}

#[test]
fn csv_defaults_to_go_feature_flag_columns_with_a_header_and_escapes_values() {
    let options = ObjectOptions {
        format: parsed("csv"),
        ..ObjectOptions::default()
    };
    let w = writer(options, &[]);
    let row = r#"{"kind":"feature","contextKind":"user","userKey":"u,1","creationDate":1717000000,"key":"f","variation":"on","value":{"x":"y"},"default":false,"source":"SERVER"}"#;
    let objects = w
        .encode(&batch(vec![
            item(0, row, "p", 0),
            item(1, r#"{"kind":"tracking"}"#, "p", 0),
        ]))
        .unwrap();
    assert_eq!(objects[0].content_type, "text/csv; charset=utf-8");
    assert_eq!(
        std::str::from_utf8(&objects[0].body).unwrap(),
        "kind,contextKind,userKey,creationDate,key,variation,value,default,source\n\
         feature,user,\"u,1\",1717000000,f,on,\"{\"\"x\"\":\"\"y\"\"}\",false,SERVER\n\
         tracking,,,,,,,,\n"
    );
}

#[test]
fn csv_columns_template_header_and_delimiter_are_configurable() {
    let options = ObjectOptions {
        format: parsed("csv"),
        csv_columns: Some("flag:/event/key,kind:/event/kind".into()),
        csv_header: Some(false),
        csv_delimiter: Some(";".into()),
        ..ObjectOptions::default()
    };
    let w = writer(options, &[]);
    let objects = w
        .encode(&batch(vec![item(
            0,
            r#"{"event":{"key":"f","kind":"feature"}}"#,
            "p",
            0,
        )]))
        .unwrap();
    assert_eq!(objects[0].body, "f;feature\n");
}

#[test]
fn bad_options_are_refused_with_the_option_named() {
    let zstd_at = |level| ObjectOptions {
        format: parsed("ndjson.zst"),
        zstd_level: Some(level),
        ..ObjectOptions::default()
    };
    let cases: [(ObjectOptions, &str); 12] = [
        (
            ObjectOptions {
                gzip_level: Some(6),
                ..ObjectOptions::default()
            },
            "format=ndjson.gz",
        ),
        (
            ObjectOptions {
                format: parsed("ndjson.gz"),
                gzip_level: Some(0),
                ..ObjectOptions::default()
            },
            "gzip_level",
        ),
        (
            ObjectOptions {
                format: parsed("ndjson.gz"),
                zstd_level: Some(3),
                ..ObjectOptions::default()
            },
            "format=ndjson.zst",
        ),
        (zstd_at(20), "zstd_level"),
        (zstd_at(0), "zstd_level"),
        (
            ObjectOptions {
                file_name: Some("fixed.ndjson".into()),
                ..ObjectOptions::default()
            },
            "{batch_id}",
        ),
        (
            ObjectOptions {
                file_name: Some("{batch_id}-{hostname}".into()),
                ..ObjectOptions::default()
            },
            "file_name",
        ),
        (
            ObjectOptions {
                csv_header: Some(true),
                ..ObjectOptions::default()
            },
            "format=csv",
        ),
        (
            ObjectOptions {
                format: parsed("csv"),
                csv_delimiter: Some("::".into()),
                ..ObjectOptions::default()
            },
            "csv_delimiter",
        ),
        (
            ObjectOptions {
                format: parsed("parquet"),
                ..ObjectOptions::default()
            },
            "schema=warehouse",
        ),
        (
            ObjectOptions {
                parquet_compression: parsed("zstd"),
                ..ObjectOptions::default()
            },
            "format=parquet",
        ),
        (
            ObjectOptions {
                format: parsed("csv"),
                parquet_row_group_rows: Some(10),
                ..ObjectOptions::default()
            },
            "format=parquet",
        ),
    ];
    for (options, needle) in cases {
        let err = options.writer("", &[], Schema::LaunchDarkly).unwrap_err();
        assert!(err.contains(needle), "{err}");
    }
    assert!("dt,week"
        .parse::<Partitions>()
        .unwrap_err()
        .contains("week"));
    assert!("dt,dt".parse::<Partitions>().unwrap_err().contains("twice"));
    assert!("orc".parse::<FormatKind>().unwrap_err().contains("parquet"));
    assert!("lz4"
        .parse::<ParquetCompression>()
        .unwrap_err()
        .contains("parquet_compression"));
    let zero_rows = ObjectOptions {
        format: parsed("parquet"),
        parquet_row_group_rows: Some(0),
        ..ObjectOptions::default()
    };
    let err = zero_rows.writer("", &[], Schema::Warehouse).unwrap_err();
    assert!(err.contains("parquet_row_group_rows"), "{err}");
    assert!(format::parse_csv_columns("a,:/x").is_err());
}

#[test]
fn overlong_keys_are_a_permanent_failure_naming_the_limit() {
    let w = ObjectOptions::default()
        .writer(&"p".repeat(1100), &[], Schema::LaunchDarkly)
        .unwrap();
    let failure = w.encode(&batch(vec![item(0, "{}", "p", 0)])).unwrap_err();
    assert!(
        !failure.is_retriable() && failure.reason.contains("1024"),
        "{}",
        failure.reason
    );
}

fn warehouse_row(table: &str, event_id: &str) -> String {
    match table {
        "summary_counters" => format!(
            r#"{{"table":"summary_counters","event_id":"{event_id}","project":"p","environment":"prod","flag_key":"f","counter_index":0,"context_kinds":null,"flag_version":null,"unknown_flag":false,"variation_index":null,"variation_value":null,"default_value":null,"count":1,"start_date":null,"end_date":null}}"#
        ),
        _ => format!(
            r#"{{"table":"metric_events","event_id":"{event_id}","project":"p","environment":"prod","kind":"custom","metric_key":"m","context_kind":null,"context_key":null,"context_anonymous":false,"metric_value":null,"data":null,"url":null,"selector":null,"creation_date":1,"timestamp":"1970-01-01T00:00:00.001Z","received_at":1}}"#
        ),
    }
}

#[test]
fn parquet_writes_one_object_per_table_and_partition_with_the_table_first_in_the_key() {
    let options = ObjectOptions {
        format: parsed("parquet"),
        ..ObjectOptions::default()
    };
    let w = options
        .writer(
            "exports",
            &[Partition::Date, Partition::Hour],
            Schema::Warehouse,
        )
        .unwrap();
    let b = batch(vec![
        item(
            0,
            &warehouse_row("metric_events", "e0"),
            "prod",
            LAST_MS_OF_HOUR_7,
        ),
        item(
            1,
            &warehouse_row("summary_counters", "e1"),
            "prod",
            LAST_MS_OF_HOUR_7,
        ),
        item(
            2,
            &warehouse_row("metric_events", "e2"),
            "prod",
            LAST_MS_OF_HOUR_7 + 1,
        ),
        item(
            3,
            &warehouse_row("metric_events", "e3"),
            "prod",
            LAST_MS_OF_HOUR_7,
        ),
    ]);
    let objects = w.encode(&b).unwrap();
    let keys = keys_and_items(&objects);
    assert_eq!(
        keys,
        [
            (
                "exports/metric_events/dt=2026-11-29/hour=07/s3-10-12.parquet",
                &[0, 3][..]
            ),
            (
                "exports/summary_counters/dt=2026-11-29/hour=07/s3-10-12.parquet",
                &[1][..]
            ),
            (
                "exports/metric_events/dt=2026-11-29/hour=08/s3-10-12.parquet",
                &[2][..]
            ),
        ]
    );
    assert_eq!(objects[0].content_type, "application/vnd.apache.parquet");
    assert_eq!(objects[0].content_encoding, None);
    assert!(objects[0].body.starts_with(b"PAR1") && objects[0].body.ends_with(b"PAR1"));
    assert_eq!(w.encode(&b).unwrap(), objects, "deterministic bytes");

    let stray = batch(vec![item(0, r#"{"kind":"feature"}"#, "prod", 0)]);
    let failure = w.encode(&stray).unwrap_err();
    assert!(!failure.is_retriable() && failure.reason.contains("schema=warehouse"));
}
