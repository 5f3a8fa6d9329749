//! Writing GGUF v3 files: used by tests to make small models, and by export.

use crate::{GgmlType, Value, ValueType};
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

/// One tensor to write: name, ggml dims, type, bytes.
type Entry<'a> = (String, Vec<u64>, GgmlType, Cow<'a, [u8]>);

/// Builds a GGUF v3 file: metadata and tensors (owned or borrowed bytes),
/// written in one pass.
#[derive(Debug, Clone, Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, Value)>,
    tensors: Vec<Entry<'a>>,
    alignment: Option<u64>,
}

/// A tensor whose byte count does not match its type and dimensions.
#[derive(Debug, thiserror::Error)]
#[error("tensor {name:?}: {ty} with dims {dims:?} needs {expected:?} bytes, got {actual}")]
pub struct WriteSizeError {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub expected: Option<u64>,
    pub actual: usize,
}

impl<'a> GgufWriter<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Use a non-default alignment (also written as `general.alignment`).
    pub fn alignment(mut self, alignment: u64) -> Self {
        assert!(
            alignment.is_power_of_two(),
            "alignment must be a power of two"
        );
        self.alignment = Some(alignment);
        self.metadata
            .push(("general.alignment".into(), Value::U32(alignment as u32)));
        self
    }

    pub fn meta(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    pub fn meta_strings<S: AsRef<str>>(
        &mut self,
        key: impl Into<String>,
        items: &[S],
    ) -> &mut Self {
        let v = items
            .iter()
            .map(|s| Value::String(s.as_ref().to_string()))
            .collect();
        self.meta(key, Value::Array(ValueType::String, v))
    }

    /// Add a tensor from raw bytes. `dims` are in ggml order (row length first).
    pub fn tensor_raw(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        bytes: Vec<u8>,
    ) -> Result<&mut Self, WriteSizeError> {
        self.tensor_cow(name.into(), dims, ty, Cow::Owned(bytes))
    }

    /// Add a tensor whose bytes are borrowed (an export's mapped variants).
    pub fn tensor_borrowed(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        bytes: &'a [u8],
    ) -> Result<&mut Self, WriteSizeError> {
        self.tensor_cow(name.into(), dims, ty, Cow::Borrowed(bytes))
    }

    fn tensor_cow(
        &mut self,
        name: String,
        dims: &[u64],
        ty: GgmlType,
        bytes: Cow<'a, [u8]>,
    ) -> Result<&mut Self, WriteSizeError> {
        let expected = ty.byte_size(dims.iter().product());
        if expected != Some(bytes.len() as u64) {
            return Err(WriteSizeError {
                name,
                dims: dims.to_vec(),
                ty,
                expected,
                actual: bytes.len(),
            });
        }
        self.tensors.push((name, dims.to_vec(), ty, bytes));
        Ok(self)
    }

    /// Add an F32 tensor with a row-major `shape` (PyTorch order).
    pub fn tensor_f32(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        data: &[f32],
    ) -> &mut Self {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor_raw(name, &dims, GgmlType::F32, bytes)
            .expect("shape and data length must agree");
        self
    }

    /// Serialise to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// Serialise into `sink`: the header, then each tensor's bytes in turn.
    pub fn write_to(&self, sink: &mut impl Write) -> std::io::Result<()> {
        let align = self.alignment.unwrap_or(crate::reader::DEFAULT_ALIGNMENT);
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut out, k);
            out.extend((v.value_type() as u32).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, bytes) in &self.tensors {
            put_string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.id().to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + bytes.len() as u64).div_ceil(align) * align;
        }
        let data_start = (out.len() as u64).div_ceil(align) * align;
        out.resize(data_start as usize, 0);
        sink.write_all(&out)?;
        let mut at = 0u64;
        for ((_, _, _, bytes), off) in self.tensors.iter().zip(offsets) {
            sink.write_all(&vec![0u8; (off - at) as usize])?;
            sink.write_all(bytes)?;
            at = off + bytes.len() as u64;
        }
        // ggml reads the data blob as every tensor padded to the alignment,
        // the last one included: a file that ends unpadded is refused
        // ("failed to read tensor data binary blob").
        sink.write_all(&vec![0u8; (at.div_ceil(align) * align - at) as usize])?;
        Ok(())
    }

    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        self.write_to(&mut f)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_string(out, s),
        Value::Array(t, items) => {
            out.extend((*t as u32).to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
}
