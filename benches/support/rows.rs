//! Warehouse rows for the benches (benches/postgres.rs, benches/warehouse.rs).

use bytes::Bytes;
use flagstream::dest::{Batch, BatchItem};
use flagstream::event::Schema;

/// A batch `prefix` of `rows` new `evaluation_events` rows (≈ 600 bytes of JSON each).
pub fn evaluation_batch(prefix: &str, rows: usize) -> Batch {
    let items = (0..rows)
        .map(|i| {
            let event_id = format!("{prefix}-{i}");
            let row = serde_json::json!({
                "table": "evaluation_events", "event_id": event_id, "project": "default",
                "environment": "production", "kind": "feature", "flag_key": "new-checkout",
                "flag_version": "12", "context_kind": "user", "context_key": format!("user-{}", i % 100),
                "context_anonymous": false, "context_attributes": "{\"plan\":\"pro\"}",
                "variation_index": 1, "variation_name": null, "variation_value": "true",
                "default_value": "false", "used_default": false, "reason_kind": "FALLTHROUGH",
                "reason_detail": null, "in_experiment": false, "prereq_of": null,
                "sampling_ratio": null, "source": null, "creation_date": 1_716_999_999_001i64,
                "timestamp": "2024-05-29T16:26:39.001Z", "received_at": 1_717_000_000_123i64,
            });
            BatchItem {
                event_id: event_id.into(),
                payload: Bytes::from(serde_json::to_vec(&row).unwrap()),
                kind: "feature".into(),
                key: Some("new-checkout".into()),
                context_key: None,
                environment: "production".into(),
                received_at_ms: 1_717_000_000_123,
            }
        })
        .collect();
    Batch {
        id: prefix.into(),
        schema: Schema::Warehouse,
        items,
        lines: None,
    }
}
