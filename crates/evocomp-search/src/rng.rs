//! Counter-based randomness: every random choice draws from a generator
//! seeded by (study seed, purpose, step), so a strategy never has to store
//! generator state to be resumable.

use rand::SeedableRng;
use rand::rngs::StdRng;

/// SplitMix64's finaliser.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit value mixing `seed` and `parts`.
pub fn mix(seed: u64, parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(splitmix(seed), |acc, &p| splitmix(acc ^ splitmix(p)))
}

/// A generator for one purpose and step.
pub fn rng_for(seed: u64, parts: &[u64]) -> StdRng {
    StdRng::seed_from_u64(mix(seed, parts))
}
