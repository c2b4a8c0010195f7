//! `wrk` (Debian's) as the load of the tests that count dropped requests: a Lua script that counts
//! 2xx and non-2xx answers per thread and prints them with wrk's socket errors on one line, and
//! its parser (the method of shared/reference/edge.md §2.1).

use std::path::Path;

/// The counting script: `done()` prints
/// `LUA ok2xx=N non2xx=N connect=N read=N write=N timeout=N`.
pub const COUNTS_LUA: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok2xx = 0; non2xx = 0 end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok2xx = ok2xx + 1 else non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do ok = ok + t:get("ok2xx"); bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format("LUA ok2xx=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    ok, bad, e.connect, e.read, e.write, e.timeout))
end
"#;

/// Writes [`COUNTS_LUA`] into `dir` and returns its path (for `wrk -s`).
pub fn write_counts_lua(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("counts.lua");
    std::fs::write(&p, COUNTS_LUA).expect("write counts.lua");
    p
}

/// The counts of one wrk run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrkCounts {
    /// 2xx answers.
    pub ok2xx: u64,
    /// Other answers.
    pub non2xx: u64,
    /// wrk's socket errors, by kind.
    pub connect: u64,
    /// Read errors (a connection closed or reset under a request).
    pub read: u64,
    /// Write errors.
    pub write: u64,
    /// Timeouts.
    pub timeout: u64,
}

impl WrkCounts {
    /// Reads the `LUA …` line of wrk's output.
    pub fn parse(out: &str) -> Option<WrkCounts> {
        let line = out.lines().find(|l| l.starts_with("LUA "))?;
        let get = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}=")))?.parse().ok();
        Some(WrkCounts {
            ok2xx: get("ok2xx")?,
            non2xx: get("non2xx")?,
            connect: get("connect")?,
            read: get("read")?,
            write: get("write")?,
            timeout: get("timeout")?,
        })
    }

    /// Every socket error.
    pub fn socket_errors(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_lines_parse() {
        let out = "Running 12s test\n  Socket errors: connect 0, read 3\nLUA ok2xx=10 non2xx=1 connect=0 read=3 write=0 timeout=2\n";
        let want = WrkCounts { ok2xx: 10, non2xx: 1, connect: 0, read: 3, write: 0, timeout: 2 };
        assert_eq!(WrkCounts::parse(out), Some(want));
        assert_eq!(WrkCounts::parse(out).unwrap().socket_errors(), 5);
        assert_eq!(WrkCounts::parse("no lua line"), None);
    }
}
