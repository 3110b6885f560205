//! Read-only inspection and verification of a WAL directory (`flagstream wal inspect|verify`).
