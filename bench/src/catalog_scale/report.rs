//! The printed figures: the summary rows of every phase and the per-round fan-out table.

use std::fmt::Write as _;

use super::{CatalogScaleArgs, fanout, flips};

/// The flip-load rows.
pub fn flip_rows(row: &mut impl FnMut(&str, &str, String), f: &flips::Flips, args: &CatalogScaleArgs) {
    row("flips", "target rate, clients", format!("{:.0}/s, {}", args.flip_rate, args.flip_clients));
    row("flips", "flips (ok / errors)", format!("{} / {}", f.m.ok, f.m.errors));
    row("flips", "achieved rate", format!("{:.0}/s over {:.2} s", f.m.ops_per_sec(), f.m.elapsed.as_secs_f64()));
    row(
        "flips",
        "latency p50 / p99 / max",
        format!("{:.2} / {:.2} / {:.2} ms", f.m.percentile_ms(0.5), f.m.percentile_ms(0.99), f.m.max_ms()),
    );
    row("raft", "idle entries/s (before the flips)", format!("{:.1}", f.idle_entries_per_sec));
    row(
        "raft",
        "entries during the flips",
        format!("{} in {:.2} s = {:.0}/s", f.entries, f.raft_secs, f.entries as f64 / f.raft_secs),
    );
    row("raft", "flips per entry", format!("{:.1}", f.m.ok as f64 / f.entries.max(1) as f64));
    row("raft", "fsyncs during the flips", format!("{} = {:.0}/s", f.fsyncs, f.fsyncs as f64 / f.raft_secs));
}

/// One row per fan-out round.
pub fn fanout_table(rounds: &[fanout::Round]) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let mut t = String::new();
    t.push_str("| round | flip to | answered | first ms | p50 ms | p99 ms | max ms | flip ack ms | manager CPU ms | bench CPU ms | body bytes |\n");
    t.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (i, r) in rounds.iter().enumerate() {
        let _ = writeln!(
            t,
            "| {} | {} | {}/{} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
            i + 1,
            r.to,
            r.answered(),
            r.watchers,
            r.lat.percentile_ms(0.0),
            r.lat.percentile_ms(0.5),
            r.lat.percentile_ms(0.99),
            r.lat.max_ms(),
            r.flip_ack_ms,
            opt(r.manager_cpu_ms),
            opt(r.bench_cpu_ms),
            r.body_bytes
        );
    }
    t
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
