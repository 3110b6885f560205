//! Human-friendly option values shared by destination and delivery options: durations
//! (`250ms`, `5s`, `1h 30m`, via `humantime`) and byte sizes (`65536`, `512KiB`, `8MiB`,
//! `10MB`, `1.5GiB`, via `bytesize`). Errors say what was expected and echo the input, for
//! messages that name the option.

use std::time::Duration;

/// Parse a human duration such as `200ms`, `5s`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|err| {
        format!("expected a duration like `250ms`, `5s` or `1h`, got `{text}`: {err}")
    })
}

/// Parse a byte size: `1048576`, `512KiB`, `4MiB`, `1GiB`, `10MB` (decimal units accepted).
pub fn parse_byte_size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let size: bytesize::ByteSize = trimmed.parse().map_err(|err| {
        format!("expected a byte size like `4MiB` or `65536`, got `{trimmed}`: {err}")
    })?;
    // bytesize saturates on overflow; a size that large is never meant.
    if size.as_u64() == u64::MAX {
        return Err(format!("`{trimmed}` is too large"));
    }
    usize::try_from(size.as_u64()).map_err(|_| format!("`{trimmed}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("65536"), Ok(65536));
        assert_eq!(parse_byte_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_byte_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_byte_size("10 MB"), Ok(10_000_000));
        assert_eq!(parse_byte_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_byte_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_byte_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_byte_size("1.5KiB"), Ok(1536));
        assert!(parse_byte_size("4 parsecs")
            .unwrap_err()
            .contains("parsecs"));
        assert!(parse_byte_size("MiB").is_err());
        assert!(parse_byte_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 1h 30m "), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
    }
}
