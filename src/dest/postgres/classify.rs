//! What a PostgreSQL error means for delivery, decided by SQLSTATE (never message text).
//!
//! | SQLSTATE / error | meaning | class |
//! |---|---|---|
//! | a server certificate `verify-full` cannot verify | configuration | permanent |
//! | no SQLSTATE (I/O, closed connection, TLS handshake), class 08 (connection), 57P01–57P03 (shutdown, cannot connect now), 40001 / 40P01 (serialization failure, deadlock), 55P03 (lock not available), 57014 (statement timeout), 58 (system error) | transient | retriable |
//! | class 53 (insufficient resources: too many connections, disk full, out of memory) | the server is overloaded | throttled |
//! | class 22 (data exception), class 23 (integrity constraint) | one row's fault | permanent for that row ([`Fault::Row`]: the loader bisects to find it) |
//! | 3D000 (no such database), 3F000 (no such schema), 42501 (insufficient privilege), class 28 (authentication), other class 42 (missing table or column, wrong type) | configuration | permanent, naming the database, schema or table |

use tokio_postgres::error::SqlState;

use crate::dest::{Failure, FailureClass};

/// Whose fault a failed statement was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Something one of the rows holds: re-loading fewer rows isolates it.
    Row(String),
    /// The connection, server or configuration: the same for every row.
    Batch(Failure),
}

/// Classify `error` that happened while `doing` something to `target` (named in reasons).
pub fn classify(error: &tokio_postgres::Error, doing: &str, target: &str) -> Fault {
    let detail = describe(error);
    let Some(code) = error.code() else {
        // A certificate the client cannot verify stays unverifiable until someone acts.
        if is_untrusted_certificate(error) {
            return permanent(format!(
                "{doing} {target}: TLS certificate not trusted: {detail}"
            ));
        }
        return Fault::Batch(Failure::retriable(format!("{doing} {target}: {detail}")));
    };
    let state = code.code();
    let class = &state[..2.min(state.len())];
    let reason = |what: &str| format!("{doing} {target}: {what}{detail}");
    if *code == SqlState::INVALID_CATALOG_NAME {
        return permanent(reason("the database does not exist: "));
    }
    if *code == SqlState::INVALID_SCHEMA_NAME {
        return permanent(reason("the schema does not exist: "));
    }
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        return permanent(reason("permission denied: "));
    }
    match class {
        "22" | "23" => Fault::Row(detail),
        "53" => Fault::Batch(Failure::throttled(reason("server overloaded: "))),
        "08" | "40" | "58" => Fault::Batch(Failure::retriable(reason(""))),
        "57" | "55" if state != "55000" => Fault::Batch(Failure::retriable(reason(""))),
        "28" => permanent(reason("authentication failed: ")),
        _ => permanent(reason("")),
    }
}

/// Is a rustls certificate rejection somewhere in `error`'s chain? (`io::Error` hides the
/// error it wraps from `source()`, so look inside each one.)
pub fn is_untrusted_certificate(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(err) = current {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(tls, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        current = err.source();
    }
    false
}

fn permanent(reason: String) -> Fault {
    Fault::Batch(Failure::permanent(reason))
}

/// The server's message with its detail, hint and position, or the client error chain.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            for extra in [db.detail(), db.hint(), db.where_()].into_iter().flatten() {
                text.push_str("; ");
                text.push_str(extra);
            }
            text
        }
        None => crate::dest::error_chain(error),
    }
}

/// A pool error: waiting for a connection, or making one.
pub fn classify_pool(error: &deadpool_postgres::PoolError, target: &str) -> Failure {
    use deadpool_postgres::PoolError;
    match error {
        PoolError::Backend(error) => match classify(error, "connecting to", target) {
            Fault::Batch(failure) => failure,
            Fault::Row(detail) => Failure::permanent(format!("connecting to {target}: {detail}")),
        },
        other => Failure::new(
            FailureClass::Retriable,
            format!("connecting to {target}: {other}"),
        ),
    }
}
