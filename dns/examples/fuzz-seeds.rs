//! Writes the fuzz target's starting corpus: one file per seed of `shoal_dns::fuzzing::seeds()`,
//! named `seed-NAME`, into the directory given (`dns/fuzz/corpus/query`).
//!
//! ```sh
//! cargo run -p shoal-dns --features fuzzing --example fuzz-seeds -- dns/fuzz/corpus/query
//! ```

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir: PathBuf = std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| "dns/fuzz/corpus/query".into());
    std::fs::create_dir_all(&dir)?;
    let seeds = shoal_dns::fuzzing::seeds();
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    println!("{} seeds written to {}", seeds.len(), dir.display());
    Ok(())
}
