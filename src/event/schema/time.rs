//! Timestamp rendering: Unix milliseconds → RFC 3339 / ISO-8601 UTC with milliseconds
//! (`2024-05-29T16:26:40.001Z`), the form Segment requires. Hand-rolled (Howard Hinnant's
//! civil-from-days) to stay allocation-free in the hot path; valid for all `u64` inputs up to
//! year 9999 and clamped beyond.

/// Largest timestamp rendered as is: 9999-12-31T23:59:59.999Z.
const MAX_MS: u64 = 253_402_300_799_999;

/// Append the ISO-8601 UTC form of `ms` (Unix milliseconds).
pub(crate) fn write_iso8601_ms(out: &mut Vec<u8>, ms: u64) {
    let ms = ms.min(MAX_MS);
    let days = (ms / 86_400_000) as i64;
    let in_day = ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, frac) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let digits = |out: &mut Vec<u8>, value: u64, width: usize| {
        let mut buf = [b'0'; 4];
        let mut v = value;
        for slot in buf[..width].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..width]);
    };
    digits(out, year as u64, 4);
    out.push(b'-');
    digits(out, month as u64, 2);
    out.push(b'-');
    digits(out, day as u64, 2);
    out.push(b'T');
    digits(out, h, 2);
    out.push(b':');
    digits(out, m, 2);
    out.push(b':');
    digits(out, s, 2);
    out.push(b'.');
    digits(out, frac, 3);
    out.push(b'Z');
}

/// The UTC calendar date (year, month, day) of `ms` (Unix milliseconds), e.g. for
/// `dt=YYYY-MM-DD` object-key partitions.
pub fn civil_date(ms: u64) -> (i64, u32, u32) {
    civil_from_days((ms.min(MAX_MS) / 86_400_000) as i64)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(ms: u64) -> String {
        let mut out = Vec::new();
        write_iso8601_ms(&mut out, ms);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_717_000_000_001), "2024-05-29T16:26:40.001Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso(1_795_267_382_896), "2026-11-21T13:23:02.896Z");
        assert_eq!(iso(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
