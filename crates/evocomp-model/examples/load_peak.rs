//! Peak host memory of putting a model on the CPU device, streamed (the
//! default) or through a full f32 host copy first (what every load did
//! before streaming, and what building a database still does).
//!
//! ```text
//! cargo run --release -p evocomp-model --example load_peak -- MODEL [f32|bf16|f16] [host]
//! ```
//!
//! Prints the peak resident set (Linux `VmHWM`) after opening the model and
//! after the device model is built, and the resident set at the end.

use burn::tensor::Device;
use evocomp_model::{LlamaModel, WeightDtype, load_model};

fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_string())
        })
        .unwrap_or_else(|| "n/a (no /proc/self/status)".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: load_peak MODEL [f32|bf16|f16] [host]")?;
    let dtype: WeightDtype = args.next().as_deref().unwrap_or("f32").parse()?;
    let via_host = args.next().as_deref() == Some("host");
    let m = load_model(&path)?;
    println!("opened: peak {}", status("VmHWM:"));
    let device = Device::flex();
    let model = if via_host {
        LlamaModel::with_dtype(m.config(), m.weights()?, &device, dtype)?
    } else {
        m.to_device(&device, dtype)?
    };
    println!(
        "on the device ({dtype}, {}): peak {}, now {}",
        if via_host {
            "through an f32 host copy"
        } else {
            "streamed"
        },
        status("VmHWM:"),
        status("VmRSS:")
    );
    drop(model);
    Ok(())
}
