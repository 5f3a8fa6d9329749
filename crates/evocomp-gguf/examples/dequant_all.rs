//! Dequantise every tensor of a GGUF file to raw little-endian f32 files, one
//! per tensor, for `scripts/reference/check_gguf_dequant.py` to compare with
//! the `gguf` Python package.
//!
//! cargo run --release --example dequant_all -p evocomp-gguf -- MODEL.gguf OUT_DIR

use evocomp_gguf::GgufFile;
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, out] = args.as_slice() else {
        return Err("usage: dequant_all MODEL.gguf OUT_DIR".into());
    };
    let f = GgufFile::open(model)?;
    std::fs::create_dir_all(out)?;
    let mut index = std::fs::File::create(std::path::Path::new(out).join("index.tsv"))?;
    for (i, t) in f.tensors().iter().enumerate() {
        let (shape, values) = f.dequantize(&t.name)?;
        let file = format!("{i:04}.f32");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(std::path::Path::new(out).join(&file), bytes)?;
        writeln!(index, "{}\t{}\t{:?}\t{}", t.name, t.ty, shape, file)?;
    }
    Ok(())
}
