//! What a database built before compact storage would take in it: every
//! stored variant encoded as `evocomp db build` now writes it (nothing is
//! written), per encoding.
//!
//! cargo run --release --example compact_size -p evocomp-db -- results/db/NAME [...]

use evocomp_db::{Database, encoded_size};
use std::collections::BTreeMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for dir in std::env::args().skip(1) {
        let db = Database::open(std::path::Path::new(&dir))?;
        let (mut before, mut after) = (0u64, 0u64);
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for (ui, u) in db.manifest.units.iter().enumerate() {
            let Some([rows, cols]) = u.shape else {
                continue;
            };
            before += u.bytes.unwrap_or(0);
            for l in &u.levels {
                let v = db.variant(ui, l.level)?;
                let (bytes, kind) = encoded_size(&v.data, rows, cols);
                // Each tensor's safetensors header entry: about 100 bytes.
                after += bytes as u64 + 100;
                *kinds.entry(kind).or_default() += 1;
            }
        }
        println!(
            "{dir}: {:.1} MB as stored, {:.1} MB compact ({:.2}x smaller); variants: {kinds:?}",
            before as f64 / 1e6,
            after as f64 / 1e6,
            before as f64 / after as f64
        );
    }
    Ok(())
}
