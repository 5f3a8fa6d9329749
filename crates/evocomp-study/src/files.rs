//! Versioned JSON: every file (and sled record) a study writes is an object
//! whose first field is `format_version` and whose last is `checksum`, the
//! sha256 of the content's canonical (compact) JSON. A damaged file is an
//! error, never a different result: a flipped digit still parses, but no
//! longer matches its checksum. (Files written before checksums have none
//! and are read as they are.)

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The version of every JSON document a study writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct Versioned<'a, T> {
    format_version: u32,
    #[serde(flatten)]
    value: &'a T,
    checksum: String,
}

fn checksum(value: &impl Serialize) -> Result<String> {
    Ok(hex::encode(Sha256::digest(serde_json::to_vec(value)?)))
}

fn versioned<T: Serialize>(value: &T) -> Result<Versioned<'_, T>> {
    Ok(Versioned {
        format_version: FORMAT_VERSION,
        checksum: checksum(value)?,
        value,
    })
}

/// `value` as pretty JSON with `format_version` first and `checksum` last.
pub fn to_versioned_json(value: &impl Serialize) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(&versioned(value)?)?)
}

/// `value` as compact JSON with `format_version` first (for store records).
pub(crate) fn to_versioned_compact(value: &impl Serialize) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&versioned(value)?)?)
}

/// Parse a versioned document; `what` names it in errors (a file path or a
/// record). A missing, older or newer version, or content that does not match
/// its checksum, is an error.
pub fn read_versioned<T: DeserializeOwned + Serialize>(bytes: &[u8], what: &str) -> Result<T> {
    let mut v: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("{what}: corrupt (not JSON)"))?;
    let obj = v
        .as_object_mut()
        .with_context(|| format!("{what}: corrupt (not a JSON object)"))?;
    match obj.remove("format_version").map(|f| f.as_u64()) {
        Some(Some(n)) if n == u64::from(FORMAT_VERSION) => {}
        Some(Some(n)) if n > u64::from(FORMAT_VERSION) => bail!(
            "{what}: format version {n} was written by a newer evocomp (this one reads {FORMAT_VERSION})"
        ),
        Some(Some(n)) => bail!(
            "{what}: format version {n} is older than this evocomp reads ({FORMAT_VERSION}); rerun the study"
        ),
        Some(None) => bail!("{what}: corrupt (format_version is not a number)"),
        None => bail!(
            "{what}: no format_version: written by an evocomp older than format {FORMAT_VERSION}; rerun the study"
        ),
    }
    let sum = match obj.remove("checksum") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => bail!("{what}: corrupt (checksum is not a string)"),
    };
    let value: T = serde_json::from_value(v).with_context(|| format!("{what}: corrupt"))?;
    if let Some(sum) = sum
        && sum != checksum(&value)?
    {
        bail!("{what}: damaged: its content does not match its checksum");
    }
    Ok(value)
}

/// Write a versioned document atomically.
pub(crate) fn write_file(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = to_versioned_json(value)?;
    evocomp_store::write_atomic(path, &bytes).map_err(|(p, e)| {
        anyhow::Error::new(e).context(format!("writing {} (is the disk full?)", p.display()))
    })
}

/// Read a versioned file, naming it in errors.
pub(crate) fn read_file<T: DeserializeOwned + Serialize>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    read_versioned(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Doc {
        a: u32,
        b: Vec<f64>,
    }

    #[test]
    fn documents_round_trip_and_other_versions_are_refused() {
        let d = Doc {
            a: 3,
            b: vec![0.1, 1e-300],
        };
        let bytes = to_versioned_json(&d).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("{\n  \"format_version\": 1,"), "{text}");
        assert_eq!(read_versioned::<Doc>(&bytes, "x").unwrap(), d);
        let old = br#"{"a": 3, "b": []}"#;
        let e = read_versioned::<Doc>(old, "f.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.json") && e.contains("no format_version"),
            "{e}"
        );
        let newer = br#"{"format_version": 99, "a": 3, "b": []}"#;
        let e = read_versioned::<Doc>(newer, "f.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer evocomp"), "{e}");
        let older = br#"{"format_version": 0, "a": 3, "b": []}"#;
        let e = read_versioned::<Doc>(older, "f.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("older"), "{e}");
        let e = read_versioned::<Doc>(b"{]", "f.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.json: corrupt"), "{e}");
    }
}
