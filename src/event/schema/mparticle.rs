//! `mparticle` schema (in progress).

use super::super::MapError;
use super::Row;

pub(crate) fn map(
    _row: &Row<'_, '_>,
    _out: &mut Vec<u8>,
    _emit: &mut dyn FnMut(&[u8]),
) -> Result<(), MapError> {
    Err(MapError(
        "schema `mparticle` is not implemented yet".to_string(),
    ))
}
