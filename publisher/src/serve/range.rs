//! HTTP `Range` handling for one representation, per RFC 9110 §14.
//!
//! Only single byte ranges are served as 206; a header with several ranges, or one this
//! parser does not understand, is ignored and the whole file is sent with 200, which
//! RFC 9110 allows. A syntactically valid range that lies wholly past the end is
//! unsatisfiable (416 with `Content-Range: bytes */len`).

/// What to send for a request on a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// The whole file, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// 416.
    Unsatisfiable,
}

/// Decides from the `Range` header value (if any) and the file length.
pub fn decide(header: Option<&str>, len: u64) -> RangeDecision {
    let Some(h) = header else {
        return RangeDecision::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeDecision::Full;
    };
    if spec.contains(',') {
        return RangeDecision::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeDecision::Full;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (first.trim(), last.trim()) {
        (f, l) if digits(f) && (l.is_empty() || digits(l)) => {
            let Ok(start) = f.parse::<u64>() else {
                return RangeDecision::Unsatisfiable;
            };
            let end = if l.is_empty() {
                u64::MAX
            } else {
                match l.parse::<u64>() {
                    Ok(e) if e >= start => e,
                    Ok(_) => return RangeDecision::Full, // last < first: invalid, ignored
                    Err(_) => u64::MAX,
                }
            };
            if start >= len {
                return RangeDecision::Unsatisfiable;
            }
            RangeDecision::Partial {
                start,
                end: end.min(len - 1),
            }
        }
        ("", l) if digits(l) => {
            let suffix = l.parse::<u64>().unwrap_or(u64::MAX);
            if suffix == 0 || len == 0 {
                return RangeDecision::Unsatisfiable;
            }
            RangeDecision::Partial {
                start: len.saturating_sub(suffix),
                end: len - 1,
            }
        }
        _ => RangeDecision::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::RangeDecision::*;
    use super::*;

    #[test]
    fn rfc_9110_cases() {
        let p = |start, end| Partial { start, end };
        let cases = [
            (None, 100, Full),
            (Some("bytes=0-9"), 100, p(0, 9)),
            (Some("bytes=90-"), 100, p(90, 99)),
            (Some("bytes=90-1000"), 100, p(90, 99)),
            (Some("bytes=-10"), 100, p(90, 99)),
            (Some("bytes=-1000"), 100, p(0, 99)),
            (Some("bytes=99-99"), 100, p(99, 99)),
            (Some("bytes=100-"), 100, Unsatisfiable),
            (Some("bytes=100-200"), 100, Unsatisfiable),
            (Some("bytes=-0"), 100, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=-5"), 0, Unsatisfiable),
            (Some("bytes=0-1,5-6"), 100, Full),
            (Some("bytes=9-0"), 100, Full),
            (Some("items=0-9"), 100, Full),
            (Some("bytes=a-b"), 100, Full),
            (Some("bytes=0-99999999999999999999999"), 100, p(0, 99)),
        ];
        for (h, len, want) in cases {
            assert_eq!(decide(h, len), want, "{h:?} on {len} bytes");
        }
    }
}
