//! How a device fetches an image, as `docs/device-protocol.md` describes it and ESP-IDF's
//! `esp_https_ota` does with partial downloads: after a length probe (`HEAD`, or
//! `Range: bytes=0-0`), ranged requests of at most [`CHUNK_BYTES`] from byte 0, the last one
//! open-ended; after a dropped link or a power loss, one open-ended request from the bytes
//! already in flash.

/// The most bytes one ranged request asks for: `esp_https_ota`'s default
/// `max_http_request_size`.
pub const CHUNK_BYTES: u64 = 64 * 1024;

/// The `Range` header of the probe that asks for the length when `HEAD` does not say it.
pub const PROBE_RANGE: &str = "bytes=0-0";

/// One ranged request: bytes `first..=last`, or `first..` to the end when `last` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeRequest {
    pub first: u64,
    pub last: Option<u64>,
}

impl RangeRequest {
    /// The `Range` header value: `bytes=a-b` or `bytes=a-`.
    pub fn header(&self) -> String {
        match self.last {
            Some(last) => format!("bytes={}-{last}", self.first),
            None => format!("bytes={}-", self.first),
        }
    }

    /// The byte after the last one this request covers, for an image of `size` bytes.
    pub fn end(&self, size: u64) -> u64 {
        self.last
            .map_or(size, |last| last.saturating_add(1).min(size))
    }
}

/// The requests of one attempt after its probe, with `written` bytes already in flash: `bytes=N-`
/// when resuming, else [`CHUNK_BYTES`] chunks from 0 with the last one open-ended.
pub fn range_requests(written: u64, size: u64) -> Vec<RangeRequest> {
    if written > 0 {
        return vec![RangeRequest {
            first: written,
            last: None,
        }];
    }
    let mut out = Vec::new();
    let mut first = 0;
    while first < size {
        if size - first <= CHUNK_BYTES {
            out.push(RangeRequest { first, last: None });
            break;
        }
        out.push(RangeRequest {
            first,
            last: Some(first + CHUNK_BYTES - 1),
        });
        first += CHUNK_BYTES;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(written: u64, size: u64) -> Vec<String> {
        range_requests(written, size)
            .iter()
            .map(RangeRequest::header)
            .collect()
    }

    #[test]
    fn a_fresh_download_asks_in_chunks_and_a_resume_asks_for_the_rest() {
        assert_eq!(headers(0, 10), ["bytes=0-"]);
        assert_eq!(headers(0, CHUNK_BYTES), ["bytes=0-"]);
        assert_eq!(
            headers(0, CHUNK_BYTES + 1),
            ["bytes=0-65535", "bytes=65536-"]
        );
        assert_eq!(
            headers(0, 2 * CHUNK_BYTES + 5),
            ["bytes=0-65535", "bytes=65536-131071", "bytes=131072-"]
        );
        assert_eq!(headers(150_000, 3 * CHUNK_BYTES), ["bytes=150000-"]);
        let chunk = range_requests(0, 200_000)[1];
        assert_eq!(chunk.end(200_000), 131_072);
        assert_eq!(range_requests(0, 200_000)[3].end(200_000), 200_000);
    }
}
