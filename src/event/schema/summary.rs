//! Summary expansion (in progress).

use super::super::MapError;
use super::{Row, Schema};

pub(crate) fn expand(
    _schema: Schema,
    _row: &Row<'_, '_>,
    _out: &mut Vec<u8>,
    _emit: &mut dyn FnMut(&[u8]),
) -> Result<(), MapError> {
    Err(MapError(
        "summary expansion is not implemented yet".to_string(),
    ))
}
