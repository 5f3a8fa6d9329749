//! The one place that turns a backend choice (the binary's `--backend`, or
//! a config's `backend`) into the burn device that runs the model.

use anyhow::{Context, Result, bail};
use burn::tensor::wgpu::{WgpuBackend, wgpu};
use burn::tensor::{Device, DeviceKind};

/// Which backend runs the model (`auto`, `wgpu`, `cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    #[default]
    /// wgpu when a GPU adapter exists, else the CPU.
    Auto,
    /// burn's wgpu backend (Vulkan; a software Vulkan driver if no GPU).
    Wgpu,
    /// burn's `flex` CPU backend.
    Cpu,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "wgpu" => Ok(BackendChoice::Wgpu),
            "cpu" => Ok(BackendChoice::Cpu),
            other => Err(format!("unknown backend {other:?} (auto, wgpu or cpu)")),
        }
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Wgpu => "wgpu",
            BackendChoice::Cpu => "cpu",
        })
    }
}

impl From<evocomp_config::BackendSpec> for BackendChoice {
    fn from(b: evocomp_config::BackendSpec) -> Self {
        match b {
            evocomp_config::BackendSpec::Auto => BackendChoice::Auto,
            evocomp_config::BackendSpec::Wgpu => BackendChoice::Wgpu,
            evocomp_config::BackendSpec::Cpu => BackendChoice::Cpu,
        }
    }
}

static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Compute on `n` CPU threads in this process (burn's flex backend, the
/// database builder and every parallel loop share rayon's global pool).
/// Once per process, before any computation; an error for 0, or when
/// called again with another number.
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 {
        bail!("--threads must be at least 1");
    }
    if let Some(&set) = THREADS.get() {
        if set == n {
            return Ok(());
        }
        bail!("the threads were already set to {set}");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot use {n} threads: {e}"))?;
    let _ = THREADS.set(n);
    Ok(())
}

/// The CPU threads this process may use: `set_threads`'s number, else
/// every core.
pub fn cores() -> usize {
    THREADS
        .get()
        .copied()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A chosen device and a line describing it.
pub struct Chosen {
    pub device: Device,
    pub description: String,
    /// The largest buffer a wgpu device allocates (its adapter's limits);
    /// None on the CPU.
    pub max_buffer_bytes: Option<u64>,
    /// burn's `flex` CPU backend (not a GPU, nor wgpu's software adapter).
    pub cpu: bool,
}

/// The graphics API we drive wgpu through. OpenGL is never used: burn's
/// kernels hang on Mesa's llvmpipe GL.
fn native_api() -> (wgpu::Backends, WgpuBackend) {
    if cfg!(target_os = "macos") {
        (wgpu::Backends::METAL, WgpuBackend::Metal)
    } else if cfg!(target_os = "windows") {
        (
            wgpu::Backends::VULKAN | wgpu::Backends::DX12,
            WgpuBackend::Auto,
        )
    } else {
        (wgpu::Backends::VULKAN, WgpuBackend::Vulkan)
    }
}

/// Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid or not
/// set in the environment." while the adapters are listed when that
/// variable is missing (as on servers and in containers): nothing is wrong,
/// but it reads as a failure. Point it at a private folder of ours first.
/// Call before any thread starts (it sets an environment variable).
pub fn quiet_vulkan_environment() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let usable = std::env::var_os("XDG_RUNTIME_DIR")
            .map(std::path::PathBuf::from)
            .is_some_and(|d| d.is_dir());
        if usable {
            return;
        }
        let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        let dir = std::env::temp_dir().join(format!("evocomp-xdg-{uid}"));
        if std::fs::create_dir_all(&dir).is_ok()
            && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_ok()
        {
            // SAFETY: called at the start of main, before any other thread exists.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

/// (name, device type, largest buffer in bytes) of every adapter on the native API.
fn adapters() -> Vec<(String, wgpu::DeviceType, u64)> {
    let (backends, _) = native_api();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    futures::executor::block_on(instance.enumerate_adapters(backends))
        .into_iter()
        .map(|a| {
            let info = a.get_info();
            let limits = a.limits();
            (
                format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend),
                info.device_type,
                limits
                    .max_storage_buffer_binding_size
                    .min(limits.max_buffer_size),
            )
        })
        .collect()
}

fn is_gpu(t: wgpu::DeviceType) -> bool {
    matches!(
        t,
        wgpu::DeviceType::DiscreteGpu
            | wgpu::DeviceType::IntegratedGpu
            | wgpu::DeviceType::VirtualGpu
    )
}

fn wgpu_device(kind: DeviceKind) -> Result<Device> {
    let (_, api) = native_api();
    Device::wgpu_options()
        .device_kind(kind)
        .graphics_api(api)
        .init()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("initialising wgpu")
}

/// ```
/// let cpu = evocomp::device::choose(evocomp::BackendChoice::Cpu).unwrap();
/// assert!(cpu.cpu && cpu.max_buffer_bytes.is_none());
/// assert_eq!("wgpu".parse::<evocomp::BackendChoice>(), Ok(evocomp::BackendChoice::Wgpu));
/// ```
///
/// The device `choice` names on this machine: `Auto` takes a GPU adapter
/// where wgpu finds one, else the CPU; `Wgpu` falls back to a software
/// Vulkan adapter (slow) and is an error without any.
pub fn choose(choice: BackendChoice) -> Result<Chosen> {
    let cpu = || Chosen {
        device: Device::flex(),
        description: match cores() {
            1 => "cpu (burn flex, 1 thread)".into(),
            n => format!("cpu (burn flex, {n} threads)"),
        },
        max_buffer_bytes: None,
        cpu: true,
    };
    match choice {
        BackendChoice::Cpu => Ok(cpu()),
        BackendChoice::Auto => {
            let found = adapters();
            match found.iter().find(|(_, t, _)| is_gpu(*t)) {
                Some((name, _, max)) => Ok(Chosen {
                    device: wgpu_device(DeviceKind::DefaultDevice)?,
                    description: format!("wgpu on {name}"),
                    max_buffer_bytes: Some(*max),
                    cpu: false,
                }),
                None => {
                    tracing::info!("no GPU adapter found ({found:?}); using the CPU backend");
                    Ok(cpu())
                }
            }
        }
        BackendChoice::Wgpu => {
            let found = adapters();
            if let Some((name, _, max)) = found.iter().find(|(_, t, _)| is_gpu(*t)) {
                return Ok(Chosen {
                    device: wgpu_device(DeviceKind::DefaultDevice)?,
                    description: format!("wgpu on {name}"),
                    max_buffer_bytes: Some(*max),
                    cpu: false,
                });
            }
            if let Some((name, _, max)) = found.iter().find(|(_, t, _)| *t == wgpu::DeviceType::Cpu)
            {
                return Ok(Chosen {
                    device: wgpu_device(DeviceKind::Cpu)?,
                    description: format!("wgpu on {name} (software driver: slow)"),
                    max_buffer_bytes: Some(*max),
                    cpu: false,
                });
            }
            bail!(
                "--backend wgpu: no Vulkan adapter found. Without a GPU, install Mesa's software \
                 driver (Debian: apt-get install mesa-vulkan-drivers libvulkan1)"
            )
        }
    }
}

/// Batches to evaluate at once on `chosen` with `threads` CPU threads: the
/// `requested` number (`--concurrent-batches`), else two on the CPU when it
/// has at least two threads (they keep both busy through the parts of a
/// forward pass that run on one thread; README's benchmark section has the
/// figures), one on a GPU (it parallelises within a batch).
pub fn concurrent_batches(chosen: &Chosen, threads: usize, requested: Option<usize>) -> usize {
    let default = if chosen.cpu && threads >= 2 { 2 } else { 1 };
    requested.unwrap_or(default).max(1)
}

/// Refuse, before anything is uploaded, a model whose largest weight or a
/// batch's logits (`tokens_per_batch` x vocab, f32) the device cannot
/// allocate as one buffer (`LlamaConfig::buffer_limit_error`: Gemma 3's
/// 640 MiB embedding on lavapipe's 128 MiB buffers).
pub fn check_fits(
    chosen: &Chosen,
    model: &std::path::Path,
    cfg: &evocomp_model::LlamaConfig,
    tokens_per_batch: usize,
) -> Result<()> {
    match chosen
        .max_buffer_bytes
        .and_then(|max| cfg.buffer_limit_error(max, tokens_per_batch))
    {
        Some(why) => bail!("{}: {why} ({})", model.display(), chosen.description),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_or_batch_over_the_device_buffer_limit_is_refused_by_name() {
        let cfg = evocomp_model::testing::tiny_config();
        let (_, weight) = cfg.largest_weight_f32();
        let path = std::path::Path::new("m.gguf");
        let device = |max| Chosen {
            device: Device::flex(),
            description: "test device".into(),
            max_buffer_bytes: max,
            cpu: false,
        };
        let logits = |tokens: u64| tokens * cfg.vocab as u64 * 4;
        // No limit, or everything under it: fine.
        check_fits(&device(None), path, &cfg, 1 << 20).unwrap();
        check_fits(&device(Some(weight.max(logits(8)))), path, &cfg, 8).unwrap();
        // The largest weight over the limit.
        let e = check_fits(&device(Some(weight - 1)), path, &cfg, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.gguf") && e.contains("embedding") && e.contains("larger buffers"),
            "{e}"
        );
        // A batch's logits over it.
        let tokens = (weight / (cfg.vocab as u64 * 4) + 1) as usize;
        let e = check_fits(&device(Some(weight)), path, &cfg, tokens)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("batch's logits") && e.contains("smaller batches"),
            "{e}"
        );
    }
}
