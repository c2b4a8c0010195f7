//! The process's allocator: jemalloc, with its thread caches off and freed pages given back to
//! the system at once.
//!
//! Why (measured with `shoal-bench catalog-scale`, bench/RESULTS.md "Catalog at scale"): under
//! glibc's malloc a manager's RSS grew far more than its live heap during a catalog load, mostly
//! memory freed by tokio's worker threads (HTTP bodies, decoded commands, answers) that stayed in
//! each thread's arena. jemalloc with these options keeps that slack small; with its default
//! options (per-thread caches, freed pages kept 10 s) RSS grew more than under glibc.

/// Every allocation of the `shoal` binary's Rust code (C libraries keep the system's malloc).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol at start (`malloc_conf`, with the crate's `_rjem_`
/// prefix; `_RJEM_MALLOC_CONF` in the environment is applied after it). `tcache:false`: no
/// per-thread caches holding freed blocks; `*_decay_ms:0`: freed pages go back to the system at
/// once rather than after 10 s.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0\0"[0];
