//! The printed figures: one row per dnsperf run, the Shoal/Knot ratios with the goals, and the
//! change-to-DNS latencies.

use std::fmt::Write as _;

use super::changes::Change;
use super::dnsperf;
use super::inproc::Cost;
use crate::catalog_scale::report::verdict;
use crate::discovery_latency::percentile;

/// How a run loaded the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// As fast as the server answers, `-q` queries in flight.
    Max,
    /// dnsperf's `-Q`: at most this many queries/s.
    Rate(f64),
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Load::Max => write!(f, "max"),
            Load::Rate(r) => write!(f, "{r:.0}/s"),
        }
    }
}

/// One measured dnsperf run.
pub struct Row {
    pub instances: usize,
    pub server: &'static str,
    pub load: Load,
    pub run: dnsperf::Run,
}

/// Every run, one row each.
pub fn runs_table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str("| instances | server | load | queries/s | completed / lost | response codes | response B | avg ms | p50 ms | p99 ms | max ms | server CPU µs/query | dnsperf CPU s |\n");
    t.push_str("|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let m = &r.run;
        let pct = |q| if m.lat.ok > 0 { format!("{:.3}", m.lat.percentile_ms(q)) } else { "-".into() };
        let cpu =
            m.server_cpu_ms.map_or("-".to_string(), |ms| format!("{:.1}", ms * 1000.0 / m.completed.max(1) as f64));
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} | {} / {} | {} | {} | {:.3} | {} | {} | {:.3} | {cpu} | {:.1} |",
            r.instances,
            r.server,
            r.load,
            m.qps,
            m.completed,
            m.lost,
            m.codes,
            m.response_bytes,
            m.avg_ms,
            pct(0.5),
            pct(0.99),
            m.max_ms,
            m.dnsperf_cpu_ms / 1000.0
        );
    }
    t
}

/// Shoal/Knot per catalog size and load, with the goals (queries/s ≥ Knot's, p99 ≤ 1.2× Knot's).
pub fn ratios_table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str(
        "| instances | load | queries/s Shoal / Knot | ratio | goal ≥ 1 | p99 ms Shoal / Knot | ratio | goal ≤ 1.2 |\n",
    );
    t.push_str("|---:|---|---:|---:|---|---:|---:|---|\n");
    for s in rows.iter().filter(|r| r.server == "shoal") {
        let Some(k) = rows.iter().find(|k| k.server == "knot" && k.instances == s.instances && k.load == s.load) else {
            continue;
        };
        let q = s.run.qps / k.run.qps;
        // At a fixed rate both are asked the same; the queries/s goal is about the max runs.
        let qps_goal = match s.load {
            Load::Max => verdict(q >= 1.0),
            Load::Rate(_) => "-",
        };
        let (p99, p99_goal) = if s.run.lat.ok > 0 && k.run.lat.ok > 0 {
            let (ps, pk) = (s.run.lat.percentile_ms(0.99), k.run.lat.percentile_ms(0.99));
            (format!("{ps:.3} / {pk:.3} | {:.2}", ps / pk), verdict(ps <= 1.2 * pk))
        } else {
            ("- | -".to_string(), "-")
        };
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} / {:.0} | {q:.2} | {qps_goal} | {p99} | {p99_goal} |",
            s.instances, s.load, s.run.qps, k.run.qps
        );
    }
    t
}

/// `answer()`'s own cost beside the node's CPU time per query in its max-rate run.
pub fn cost_table(costs: &[(usize, Cost)], rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str("| instances | answer() alone, median µs: A / SRV / NXDOMAIN / mix | with encoding, median µs: A / SRV / NXDOMAIN / mix | node CPU µs/query (max run) | Knot CPU µs/query (max run) |\n");
    t.push_str("|---:|---|---|---:|---:|\n");
    let us = |v: &[f64; 4]| format!("{:.2} / {:.2} / {:.2} / {:.2}", v[0] / 1e3, v[1] / 1e3, v[2] / 1e3, v[3] / 1e3);
    for (instances, c) in costs {
        let cpu = |server: &str| {
            rows.iter()
                .find(|r| r.server == server && r.instances == *instances && r.load == Load::Max)
                .and_then(|r| {
                    r.run.server_cpu_ms.map(|ms| format!("{:.1}", ms * 1000.0 / r.run.completed.max(1) as f64))
                })
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            t,
            "| {instances} | {} | {} | {} | {} |",
            us(&c.answer_ns),
            us(&c.with_encoding_ns),
            cpu("shoal"),
            cpu("knot")
        );
    }
    t
}

/// The change-to-DNS latencies and the goal (p99 < 50 ms, from just before the write).
pub fn changes_table(changes: &[Change], instances: usize) -> String {
    let mut t = String::new();
    let stats = |f: fn(&Change) -> f64| {
        let mut v: Vec<f64> = changes.iter().map(f).collect();
        (percentile(&mut v, 50.0), percentile(&mut v, 99.0), v.last().copied().unwrap_or(f64::NAN))
    };
    let _ =
        writeln!(t, "| {} changes, {instances} instances in the catalog | p50 ms | p99 ms | max ms |", changes.len());
    t.push_str("|---|---:|---:|---:|\n");
    for (what, f) in [
        ("write sent → first DNS answer with the change", (|c: &Change| c.from_send_ms) as fn(&Change) -> f64),
        ("write acknowledged → that answer", |c: &Change| c.from_ack_ms),
        ("the write itself (sent → acknowledged)", |c: &Change| c.ack_ms),
        ("DNS polls per change", |c: &Change| f64::from(c.polls)),
    ] {
        let (p50, p99, max) = stats(f);
        let _ = writeln!(t, "| {what} | {p50:.2} | {p99:.2} | {max:.2} |");
    }
    let before_ack = changes.iter().filter(|c| c.from_ack_ms < 0.0).count();
    let by_kind = |to: &str| {
        let mut v: Vec<f64> = changes.iter().filter(|c| c.to == to).map(|c| c.from_send_ms).collect();
        (v.len(), percentile(&mut v, 50.0), percentile(&mut v, 99.0))
    };
    let (nc, c50, c99) = by_kind("critical");
    let (np, p50, p99) = by_kind("passing");
    let _ = writeln!(
        t,
        "\nto critical ({nc}): p50 {c50:.2} / p99 {p99c:.2} ms; to passing ({np}): p50 {p50:.2} / p99 {p99:.2} ms; \
         {before_ack} of {} in DNS before the write's ack arrived",
        changes.len(),
        p99c = c99,
    );
    let (_, p99_send, _) = stats(|c| c.from_send_ms);
    let _ = writeln!(t, "goal: p99 < 50 ms (from the send): {p99_send:.2} ms, {}", verdict(p99_send < 50.0));
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Measurement;

    fn run(qps: f64, lat_us: &[u64]) -> dnsperf::Run {
        let mut latencies_ns: Vec<u64> = lat_us.iter().map(|u| u * 1000).collect();
        latencies_ns.sort_unstable();
        dnsperf::Run {
            qps,
            completed: lat_us.len() as u64,
            lat: Measurement { ok: lat_us.len() as u64, latencies_ns, ..Measurement::default() },
            ..dnsperf::Run::default()
        }
    }

    #[test]
    fn ratios_and_goals() {
        let rows = [
            Row { instances: 100, server: "shoal", load: Load::Max, run: run(50_000.0, &[100, 200, 300]) },
            Row { instances: 100, server: "knot", load: Load::Max, run: run(100_000.0, &[100, 200, 200]) },
            Row { instances: 100, server: "shoal", load: Load::Rate(20_000.0), run: run(20_000.0, &[100, 110]) },
            Row { instances: 100, server: "knot", load: Load::Rate(20_000.0), run: run(20_000.0, &[100, 100]) },
        ];
        let t = ratios_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2], "| 100 | max | 50000 / 100000 | 0.50 | NOT met | 0.300 / 0.200 | 1.50 | NOT met |");
        assert_eq!(lines[3], "| 100 | 20000/s | 20000 / 20000 | 1.00 | - | 0.110 / 0.100 | 1.10 | met |");
        assert!(runs_table(&rows).lines().nth(2).unwrap().starts_with("| 100 | shoal | max | 50000 | 3 / 0 |"));
    }

    #[test]
    fn change_percentiles_and_goal() {
        let changes: Vec<Change> = (1..=100)
            .map(|i| Change {
                to: if i % 2 == 0 { "passing" } else { "critical" },
                from_send_ms: f64::from(i),
                from_ack_ms: f64::from(i) - 2.0,
                ack_ms: 2.0,
                polls: 1,
            })
            .collect();
        let t = changes_table(&changes, 10_000);
        assert!(t.contains("| write sent → first DNS answer with the change | 50.00 | 99.00 | 100.00 |"), "{t}");
        assert!(t.contains("1 of 100 in DNS before the write's ack arrived"), "{t}");
        assert!(t.contains("goal: p99 < 50 ms (from the send): 99.00 ms, NOT met"), "{t}");
    }
}
