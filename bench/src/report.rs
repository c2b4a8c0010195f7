//! The printed results: one row per (system, cluster size, workload), ratio rows Shoal/etcd, and the
//! check against the goal.

use std::fmt::Write;

use crate::load::Measurement;
use crate::target::System;

/// One measured cell of the comparison.
pub struct Row {
    pub system: System,
    pub nodes: usize,
    pub workload: String,
    pub m: Measurement,
}

/// A short summary of one measurement, for progress output.
pub fn one_line(m: &Measurement) -> String {
    let mut s = format!(
        "{} ok, {} errors in {:.2}s: {:.0} ops/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        m.ok,
        m.errors,
        m.elapsed.as_secs_f64(),
        m.ops_per_sec(),
        m.percentile_ms(0.50),
        m.percentile_ms(0.90),
        m.percentile_ms(0.99),
        m.percentile_ms(0.999),
        m.max_ms()
    );
    if let Some(e) = &m.first_error {
        let _ = write!(s, " (first error: {e})");
    }
    s
}

/// The results as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| system | nodes | workload | ok ops | errors | ops/s | p50 ms | p99 ms | max ms |\n");
    out.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let m = &r.m;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            r.system,
            r.nodes,
            r.workload,
            m.ok,
            m.errors,
            m.ops_per_sec(),
            m.percentile_ms(0.50),
            m.percentile_ms(0.99),
            m.max_ms()
        );
    }
    out
}

fn find<'a>(rows: &'a [Row], system: System, nodes: usize, workload: &str) -> Option<&'a Measurement> {
    rows.iter().find(|r| r.system == system && r.nodes == nodes && r.workload == workload).map(|r| &r.m)
}

/// Shoal/etcd for every (cluster size, workload) measured on both. Throughput: higher is better for
/// Shoal; latency: lower is better for Shoal.
pub fn ratios(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| ratio Shoal/etcd | nodes | workload | ops/s | p50 | p99 |\n");
    out.push_str("|---|---:|---|---:|---:|---:|\n");
    for r in rows.iter().filter(|r| r.system == System::Shoal) {
        let Some(e) = find(rows, System::Etcd, r.nodes, &r.workload) else { continue };
        let s = &r.m;
        let _ = writeln!(
            out,
            "| shoal/etcd | {} | {} | {:.2} | {:.2} | {:.2} |",
            r.nodes,
            r.workload,
            s.ops_per_sec() / e.ops_per_sec(),
            s.percentile_ms(0.50) / e.percentile_ms(0.50),
            s.percentile_ms(0.99) / e.percentile_ms(0.99)
        );
    }
    out
}

/// The goal on `nodes` nodes: Shoal's many-client put throughput ≥ etcd's and its p99 ≤ etcd's, and
/// Shoal's 1-client put p50 ≤ etcd's. `None` when the rows to judge it are missing.
pub fn goal(rows: &[Row], nodes: usize) -> Option<String> {
    let many = rows
        .iter()
        .find(|r| {
            r.system == System::Shoal && r.nodes == nodes && r.workload.starts_with("put") && r.workload != "put1"
        })?
        .workload
        .clone();
    let (s_many, e_many) = (find(rows, System::Shoal, nodes, &many)?, find(rows, System::Etcd, nodes, &many)?);
    let (s_one, e_one) = (find(rows, System::Shoal, nodes, "put1")?, find(rows, System::Etcd, nodes, "put1")?);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut out = format!("Goal on {nodes} nodes (fsync on):\n");
    let checks = [
        (
            format!("{many} ops/s: shoal {:.0} >= etcd {:.0}", s_many.ops_per_sec(), e_many.ops_per_sec()),
            s_many.ops_per_sec() >= e_many.ops_per_sec(),
        ),
        (
            format!(
                "{many} p99: shoal {:.2} ms <= etcd {:.2} ms",
                s_many.percentile_ms(0.99),
                e_many.percentile_ms(0.99)
            ),
            s_many.percentile_ms(0.99) <= e_many.percentile_ms(0.99),
        ),
        (
            format!("put1 p50: shoal {:.2} ms <= etcd {:.2} ms", s_one.percentile_ms(0.50), e_one.percentile_ms(0.50)),
            s_one.percentile_ms(0.50) <= e_one.percentile_ms(0.50),
        ),
    ];
    for (what, ok) in checks {
        let _ = writeln!(out, "- {what}: {}", verdict(ok));
    }
    Some(out)
}
