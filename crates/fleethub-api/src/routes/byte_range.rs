//! HTTP Range requests (RFC 9110 §14) over one file of known length, the way ESP-IDF's
//! `esp_https_ota` sends them: `bytes=0-0` to learn the length, `bytes=a-b` chunks whose end may
//! reach or pass the last byte (clamped), and `bytes=N-` to resume. Also `bytes=-N` (the last N
//! bytes). A list of ranges is answered with the whole file (a server may ignore Range), which
//! no OTA client asks for.

/// What to send for a Range header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// 200 with the whole file.
    Full,
    /// 206 with bytes `start..=end` (end clamped to the last byte).
    Part { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */{len}`: the range starts past the end.
    Unsatisfiable,
}

/// The answer to `header` for a file of `len` bytes; `Err` names what is malformed (answered
/// 400). A unit other than `bytes` is ignored (the whole file), as RFC 9110 allows.
pub fn parse(header: &str, len: u64) -> Result<ByteRange, String> {
    let header = header.trim();
    let Some((unit, specs)) = header.split_once('=') else {
        return Err(format!("Range '{header}' is not 'bytes=first-last'"));
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(ByteRange::Full);
    }
    if specs.contains(',') {
        return Ok(ByteRange::Full);
    }
    let Some((first, last)) = specs.trim().split_once('-') else {
        return Err(format!(
            "Range '{header}' has no '-': use bytes=first-last, bytes=first- or bytes=-suffix"
        ));
    };
    let number = |s: &str| -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "Range '{header}': '{s}' is not a byte position (digits only)"
            ));
        }
        s.parse::<u64>()
            .map_err(|_| format!("Range '{header}': {s} is out of range"))
    };
    let last_byte = len.saturating_sub(1);
    match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n = number(suffix)?;
            if n == 0 || len == 0 {
                return Ok(ByteRange::Unsatisfiable);
            }
            Ok(ByteRange::Part {
                start: len.saturating_sub(n),
                end: last_byte,
            })
        }
        (first, "") => {
            let start = number(first)?;
            if start >= len {
                return Ok(ByteRange::Unsatisfiable);
            }
            Ok(ByteRange::Part {
                start,
                end: last_byte,
            })
        }
        (first, last) => {
            let (start, end) = (number(first)?, number(last)?);
            if end < start {
                return Err(format!(
                    "Range '{header}' ends ({end}) before it starts ({start})"
                ));
            }
            if start >= len {
                return Ok(ByteRange::Unsatisfiable);
            }
            Ok(ByteRange::Part {
                start,
                end: end.min(last_byte),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, end: u64) -> Result<ByteRange, String> {
        Ok(ByteRange::Part { start, end })
    }

    #[test]
    fn every_form_esp_https_ota_sends() {
        assert_eq!(parse("bytes=0-0", 100), part(0, 0));
        assert_eq!(parse("bytes=10-19", 100), part(10, 19));
        assert_eq!(parse("bytes=90-99", 100), part(90, 99));
        assert_eq!(
            parse("bytes=90-100", 100),
            part(90, 99),
            "end = length is clamped"
        );
        assert_eq!(parse("bytes=90-5000", 100), part(90, 99));
        assert_eq!(parse("bytes=64-", 100), part(64, 99));
        assert_eq!(parse("bytes=99-", 100), part(99, 99));
        assert_eq!(parse("bytes=-10", 100), part(90, 99));
        assert_eq!(parse("bytes=-1000", 100), part(0, 99));
        assert_eq!(parse("Bytes = 1-2", 100), part(1, 2));
    }

    #[test]
    fn past_the_end_is_unsatisfiable_and_nonsense_is_malformed() {
        assert_eq!(parse("bytes=100-", 100), Ok(ByteRange::Unsatisfiable));
        assert_eq!(parse("bytes=100-200", 100), Ok(ByteRange::Unsatisfiable));
        assert_eq!(parse("bytes=-0", 100), Ok(ByteRange::Unsatisfiable));
        for bad in [
            "bytes=5-1",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
            "bytes=1",
            "0-10",
            "bytes=+1-2",
        ] {
            assert!(parse(bad, 100).is_err(), "{bad}");
        }
        assert!(parse("bytes=5-1", 100)
            .unwrap_err()
            .contains("ends (1) before it starts (5)"));
        assert_eq!(parse("items=0-1", 100), Ok(ByteRange::Full));
        assert_eq!(parse("bytes=0-1,5-6", 100), Ok(ByteRange::Full));
    }
}
