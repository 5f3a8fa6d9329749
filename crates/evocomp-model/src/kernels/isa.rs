//! Which compiled copy of a kernel runs: the instruction set, detected at run
//! time and optionally forced lower, and the proof that the CPU has it.
//!
//! Every CPU kernel is compiled several times (the baseline, AVX2 + FMA,
//! AVX-512 F/BW/DQ/VL, and for bf16 products AVX-512 BF16); [`Cpu::active`]
//! picks the copy. `EVOCOMP_ISA=baseline|avx2|avx512|avx512bf16` in the
//! environment, or [`force_isa`], caps it, so every copy a machine can run
//! is reachable (for tests that compare them, and to measure each one); a
//! cap above what the CPU has is refused, never obeyed.
//!
//! Safety is local: a copy compiled with `#[target_feature]` may only run
//! where the CPU has those features, and the only way to ask for one is a
//! [`Cpu`] value, which nothing but detection ([`Cpu::with`], [`Cpu::best`])
//! creates. On other architectures than x86-64 there is one copy, the
//! baseline (which the compiler vectorises for the target's default vector
//! unit: NEON on aarch64).

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction set a kernel copy is compiled for, each a superset of the
/// one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// The target's baseline (x86-64: SSE2).
    Baseline,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F, BW, DQ and VL.
    Avx512,
    /// AVX-512 as above and BF16 (`vdpbf16ps`), for bf16 products.
    Avx512Bf16,
}

impl Isa {
    /// Every instruction set, lowest first.
    pub const ALL: [Isa; 4] = [Isa::Baseline, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16];

    /// Its name as `EVOCOMP_ISA` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
        }
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(c: u8) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.code() == c)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = IsaError;
    fn from_str(s: &str) -> Result<Isa, IsaError> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| IsaError::Unknown(s.to_string()))
    }
}

/// An instruction set that cannot be forced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    #[error("unknown instruction set {0:?} (one of: baseline, avx2, avx512, avx512bf16)")]
    Unknown(String),
    #[error("this CPU does not have {wanted} (the most it has is {best})")]
    Unsupported { wanted: Isa, best: Isa },
}

/// Proof that this CPU can run the copies compiled for [`Cpu::isa`] (and for
/// every lower one). Only detection creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu(Isa);

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl");
        let avx2 = has!("avx2") && has!("fma");
        if avx512 && avx2 && has!("avx512bf16") {
            return Isa::Avx512Bf16;
        }
        if avx512 && avx2 {
            return Isa::Avx512;
        }
        if avx2 {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// 0: no cap from `force_isa`; else `Isa::code`.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The cap `EVOCOMP_ISA` sets, read once (an unknown or unsupported value
/// is reported on stderr once and ignored).
fn env_cap() -> Option<Isa> {
    static ENV: OnceLock<Option<Isa>> = OnceLock::new();
    *ENV.get_or_init(|| {
        let v = std::env::var("EVOCOMP_ISA").ok()?;
        match v.parse::<Isa>() {
            Ok(isa) if isa <= Cpu::best().0 => Some(isa),
            Ok(isa) => {
                eprintln!(
                    "EVOCOMP_ISA={v}: {}; using {}",
                    IsaError::Unsupported {
                        wanted: isa,
                        best: Cpu::best().0
                    },
                    Cpu::best().0
                );
                None
            }
            Err(e) => {
                eprintln!("EVOCOMP_ISA: {e}; using {}", Cpu::best().0);
                None
            }
        }
    })
}

impl Cpu {
    /// The most this CPU has.
    pub fn best() -> Cpu {
        static BEST: OnceLock<Isa> = OnceLock::new();
        Cpu(*BEST.get_or_init(detect))
    }

    /// `isa`, if this CPU has it.
    pub fn with(isa: Isa) -> Option<Cpu> {
        (isa <= Cpu::best().0).then_some(Cpu(isa))
    }

    /// Every instruction set this CPU has, lowest first.
    pub fn all() -> Vec<Cpu> {
        Isa::ALL.into_iter().filter_map(Cpu::with).collect()
    }

    /// What the kernels run: the best this CPU has, capped by [`force_isa`]
    /// or else by `EVOCOMP_ISA`.
    pub fn active() -> Cpu {
        let best = Cpu::best();
        let cap = Isa::from_code(FORCED.load(Ordering::Relaxed)).or_else(env_cap);
        match cap {
            Some(c) if c < best.0 => Cpu(c),
            _ => best,
        }
    }

    /// The instruction set it proves.
    pub fn isa(self) -> Isa {
        self.0
    }
}

/// Cap the instruction set every kernel of this process uses (`None`: no
/// cap, back to `EVOCOMP_ISA` or the best the CPU has). Every copy gives the
/// same bits, so this changes speed only. An instruction set the CPU lacks
/// is an error and changes nothing.
pub fn force_isa(isa: Option<Isa>) -> Result<(), IsaError> {
    let code = match isa {
        None => 0,
        Some(i) => Cpu::with(i)
            .ok_or(IsaError::Unsupported {
                wanted: i,
                best: Cpu::best().0,
            })?
            .0
            .code(),
    };
    FORCED.store(code, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_caps_above_the_cpu_are_refused() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
            assert_eq!(Isa::from_code(isa.code()), Some(isa));
        }
        assert!(matches!("sse9".parse::<Isa>(), Err(IsaError::Unknown(_))));
        let best = Cpu::best().isa();
        assert_eq!(Cpu::all().last().map(|c| c.isa()), Some(best));
        assert_eq!(Cpu::all()[0].isa(), Isa::Baseline);
        for isa in Isa::ALL {
            assert_eq!(Cpu::with(isa).is_some(), isa <= best);
            if isa > best {
                assert_eq!(
                    force_isa(Some(isa)),
                    Err(IsaError::Unsupported { wanted: isa, best })
                );
            }
        }
    }
}
