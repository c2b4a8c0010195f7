//! What this host offers, measured once by the process (the model's [`Resources`] is plain data).

use shoal_model::Resources;

static ENGINE_VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records the local engine's version once at start (the `shoal` binary probes the engine; the
/// registry knows nothing of Docker).
pub fn set_engine_version(version: String) {
    let _ = ENGINE_VERSION.set(version);
}

/// Measures this host: CPUs from the scheduler affinity, memory from `/proc/meminfo`, and the
/// engine version recorded at start.
pub fn resources() -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0);
    Resources { cpus, memory_bytes, engine_version: ENGINE_VERSION.get().cloned().unwrap_or_default() }
}
