//! The one duration reader: `500ms`, `10s`, `1.5m`, `2h`, `90d` (Go-style units plus days), used by
//! the HTTP API's `?wait=`, the CLI's flags and the benchmark.

use std::time::Duration;

/// Parses a non-negative number followed by a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d`);
/// `None` when it is not one.
pub fn parse(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("500ms", Some(Duration::from_millis(500))),
            ("10s", Some(Duration::from_secs(10))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("1.5m", Some(Duration::from_secs(90))),
            ("5m", Some(Duration::from_secs(300))),
            ("1h", Some(Duration::from_secs(3600))),
            ("2h", Some(Duration::from_secs(7200))),
            ("90d", Some(Duration::from_secs(90 * 86_400))),
            ("250us", Some(Duration::from_micros(250))),
            (" 3s ", Some(Duration::from_secs(3))),
            ("10", None),
            ("s", None),
            ("10x", None),
            ("-1s", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), *want, "case {input:?}");
        }
    }
}
