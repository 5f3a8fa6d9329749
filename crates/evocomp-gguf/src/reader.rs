//! Reading a GGUF file: header, metadata, tensor table, alignment, memory-mapped data.

use crate::mapped::Mapped;
use crate::{DequantError, GgmlType, Value, ValueType, dequantize};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// How deep metadata arrays may nest (arrays of arrays of ...).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Everything that can go wrong reading a GGUF file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a GGUF file (starts with bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, found: Vec<u8> },
    #[error("{path}: GGUF version {version} is not supported (supported: 2, 3)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "{path}: file is truncated: it ends at byte {len} while reading {what} at byte {offset}"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        len: u64,
    },
    #[error("{path}: metadata key {key:?} has unknown value type id {id}")]
    BadValueType { path: PathBuf, key: String, id: u32 },
    #[error(
        "{path}: metadata key {key:?} nests arrays more than {MAX_ARRAY_DEPTH} deep (GGUF files \
         in use nest at most 1)"
    )]
    TooDeep { path: PathBuf, key: String },
    #[error("{path}: not a regular file (a FIFO, socket, device or folder cannot be a GGUF model)")]
    NotAFile { path: PathBuf },
    #[error("{path}: reading {what}: {message}")]
    Shrunk {
        path: PathBuf,
        /// `tensor "name"`, or the header.
        what: String,
        message: String,
    },
    #[error("{path}: metadata key {key:?} is not valid UTF-8")]
    BadString { path: PathBuf, key: String },
    #[error("{path}: tensor {tensor:?} has unknown ggml type id {id}")]
    UnknownType {
        path: PathBuf,
        tensor: String,
        id: u32,
    },
    #[error("{path}: tensor {tensor:?}: {problem}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        problem: String,
    },
    #[error(
        "{path}: tensor {tensor:?} data runs to byte {end} but the file has only {len} bytes (truncated download?)"
    )]
    TensorOutOfBounds {
        path: PathBuf,
        tensor: String,
        end: u64,
        len: u64,
    },
    #[error("{path}: metadata key {key:?} is missing")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: the header's {count} ({found}) is wrong: {problem}")]
    BadCount {
        path: PathBuf,
        count: &'static str,
        found: u64,
        problem: String,
    },
    #[error("{path}: metadata key {key:?} should be {expected}, found {found}")]
    WrongKeyType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: tensor {name:?} is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor {tensor:?}: {source}")]
    Dequant {
        path: PathBuf,
        tensor: String,
        #[source]
        source: DequantError,
    },
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the fastest-varying (row length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape in row-major (PyTorch) order: the reverse of `dims`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn byte_size(&self) -> u64 {
        // Checked when the file is opened.
        self.ty.byte_size(self.n_elements()).unwrap_or(0)
    }
}

/// An open, memory-mapped, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    /// The mapped file (a read that finds it cut short is an error).
    map: Mapped,
    version: u32,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

/// One entry of the tensor table: name, dimensions, type, data offset.
fn tensor_info(
    c: &mut Cursor,
    path: &Path,
    i: u64,
    n_tensors: u64,
) -> Result<(String, Vec<u64>, GgmlType, u64), GgufError> {
    let what = || format!("tensor-info entry {i} of {n_tensors}");
    let name = c.string(&what)?.map_err(|_| GgufError::BadString {
        path: path.to_path_buf(),
        key: format!("tensor #{i}"),
    })?;
    let bad = |problem: String| GgufError::BadTensor {
        path: path.to_path_buf(),
        tensor: name.clone(),
        problem,
    };
    let n_dims = c.u32(&what)?;
    if n_dims == 0 || n_dims > 4 {
        return Err(bad(format!("has {n_dims} dimensions (expected 1 to 4)")));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64(&what)?);
    }
    let id = c.u32(&what)?;
    let ty = GgmlType::from_id(id).ok_or_else(|| GgufError::UnknownType {
        path: path.to_path_buf(),
        tensor: name.clone(),
        id,
    })?;
    let offset = c.u64(&what)?;
    let n: Option<u64> = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let Some(n) = n else {
        return Err(bad(format!("dimensions {dims:?} overflow")));
    };
    let (block, _) = ty.block_geometry();
    if dims[0] % block as u64 != 0 || ty.byte_size(n).is_none() {
        return Err(bad(format!(
            "row length {} is not a multiple of the {ty} block size {block}",
            dims[0]
        )));
    }
    Ok((name, dims, ty, offset))
}

/// Whether the header's metadata count is too small: from `start` (where
/// the tensor table should begin), one or more well-formed metadata entries
/// followed by `n_tensors` well-formed tensor entries. The first such key.
fn hidden_metadata(bytes: &[u8], path: &Path, start: usize, n_tensors: u64) -> Option<String> {
    let mut c = Cursor {
        path,
        bytes,
        pos: start,
    };
    let first = metadata_entry(&mut c)?;
    loop {
        let mut t = Cursor {
            path,
            bytes,
            pos: c.pos,
        };
        if (0..n_tensors).all(|i| tensor_info(&mut t, path, i, n_tensors).is_ok()) {
            return Some(first);
        }
        metadata_entry(&mut c)?;
    }
}

/// The key of a well-formed metadata entry at the cursor, if there is one.
fn metadata_entry(c: &mut Cursor) -> Option<String> {
    let what = || "a metadata entry".to_string();
    let key = c.string(&what).ok()?.ok()?;
    let ty = ValueType::from_id(c.u32(&what).ok()?)?;
    c.value(ty, &key).ok()?;
    Some(key)
}

struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n > remaining {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                offset: self.pos as u64,
                len: self.bytes.len() as u64,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        Ok(s.try_into().expect("slice of length N"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<Result<String, ()>, GgufError> {
        let n = self.u64(what)?;
        let s = self.take(n, what)?;
        Ok(String::from_utf8(s.to_vec()).map_err(|_| ()))
    }

    fn value(&mut self, ty: ValueType, key: &str) -> Result<Value, GgufError> {
        self.value_at(ty, key, 0)
    }

    /// A value inside `depth` arrays: bounded, so that a file cannot nest
    /// arrays until the parser (or the drop of what it built) runs out of
    /// stack.
    fn value_at(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("the value of metadata key {key:?}");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(&what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(&what)?[0] != 0),
            ValueType::String => {
                Value::String(self.string(&what)?.map_err(|_| GgufError::BadString {
                    path: self.path.to_path_buf(),
                    key: key.to_string(),
                })?)
            }
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::TooDeep {
                        path: self.path.to_path_buf(),
                        key: key.to_string(),
                    });
                }
                let id = self.u32(&what)?;
                let elem = ValueType::from_id(id).ok_or_else(|| GgufError::BadValueType {
                    path: self.path.to_path_buf(),
                    key: key.to_string(),
                    id,
                })?;
                let n = self.u64(&what)?;
                // Every element takes at least one byte: a count beyond the
                // file's end is a truncation, not a reason to allocate.
                let remaining = (self.bytes.len() - self.pos) as u64;
                if n > remaining {
                    return Err(GgufError::Truncated {
                        path: self.path.to_path_buf(),
                        what: what(),
                        offset: self.pos as u64,
                        len: self.bytes.len() as u64,
                    });
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value_at(elem, key, depth + 1)?);
                }
                Value::Array(elem, v)
            }
        })
    }
}

impl GgufFile {
    /// Open, memory-map and validate a GGUF file: header, metadata, tensor
    /// table, and that every tensor's data lies inside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Opening a FIFO blocks until someone writes to it: look first.
        if !std::fs::metadata(path).map_err(io)?.is_file() {
            return Err(GgufError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(io)?;
        // SAFETY: the file is opened read-only and we never hand out the map
        // beyond the lifetime of `GgufFile`; a file cut short under it is an
        // error at the next read (`Mapped`).
        let map = unsafe { Mapped::map(file) }.map_err(io)?;
        Self::from_map(path, map)
    }

    fn from_map(path: &Path, map: Mapped) -> Result<Self, GgufError> {
        let mmap = map.bytes();
        let len = mmap.len() as u64;
        let mut c = Cursor {
            path,
            bytes: mmap,
            pos: 0,
        };
        let magic = c.take(4.min(len), &|| "the magic number".into())?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                path: path.to_path_buf(),
                found: magic.to_vec(),
            });
        }
        let version = c.u32(&|| "the version".into())?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        let n_tensors = c.u64(&|| "the tensor count".into())?;
        let n_kv = c.u64(&|| "the metadata count".into())?;

        let mut metadata = Vec::new();
        let mut index = HashMap::new();
        for i in 0..n_kv {
            let what = || format!("metadata entry {i} of {n_kv}");
            let key = c.string(&what)?.map_err(|_| GgufError::BadString {
                path: path.to_path_buf(),
                key: format!("#{i}"),
            })?;
            let id = c.u32(&what)?;
            let ty = ValueType::from_id(id).ok_or_else(|| GgufError::BadValueType {
                path: path.to_path_buf(),
                key: key.clone(),
                id,
            })?;
            let value = c.value(ty, &key)?;
            index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }

        let mut tensors = Vec::new();
        let mut tensor_index = HashMap::new();
        for i in 0..n_tensors {
            let start = c.pos;
            let entry = tensor_info(&mut c, path, i, n_tensors);
            let (name, dims, ty, offset) = match entry {
                Ok(e) => e,
                // An entry that does not parse as a tensor but as a metadata
                // entry: the metadata count in the header is wrong.
                Err(e) => {
                    return Err(match hidden_metadata(c.bytes, path, start, n_tensors) {
                        Some(key) => GgufError::BadCount {
                            path: path.to_path_buf(),
                            count: "metadata count",
                            found: n_kv,
                            problem: format!(
                                "metadata key {key:?} follows the {n_kv} entries it announces"
                            ),
                        },
                        None => e,
                    });
                }
            };
            let bad = |problem: String| GgufError::BadTensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                problem,
            };
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(bad("appears twice in the tensor table".into()));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }

        let alignment = match index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => match metadata[i].1.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(GgufError::WrongKeyType {
                        path: path.to_path_buf(),
                        key: "general.alignment".into(),
                        expected: "a power of two",
                        found: metadata[i].1.summary(),
                    });
                }
            },
        };
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        for t in &tensors {
            if t.offset % alignment != 0 {
                return Err(GgufError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    problem: format!("offset {} is not aligned to {alignment}", t.offset),
                });
            }
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.byte_size()))
                .unwrap_or(u64::MAX);
            if end > len {
                return Err(GgufError::TensorOutOfBounds {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    end,
                    len,
                });
            }
        }

        // Parsed from the file's own bytes only if none was cut meanwhile.
        if let Some(message) = map.check() {
            return Err(GgufError::Shrunk {
                path: path.to_path_buf(),
                what: "the header".into(),
                message,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            version,
            metadata,
            index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    fn wrong(&self, key: &str, expected: &'static str, v: &Value) -> GgufError {
        GgufError::WrongKeyType {
            path: self.path.clone(),
            key: key.to_string(),
            expected,
            found: v.summary(),
        }
    }

    /// A required non-negative integer.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong(key, "a non-negative integer", v))
    }

    /// A required number.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.wrong(key, "a number", v))
    }

    /// A required string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong(key, "a string", v))
    }

    /// A required array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let v = self.require(key)?;
        let arr = v
            .as_array()
            .ok_or_else(|| self.wrong(key, "an array of strings", v))?;
        arr.iter()
            .map(|e| {
                e.as_str()
                    .ok_or_else(|| self.wrong(key, "an array of strings", v))
            })
            .collect()
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Where the tensor data starts in the file (tensor offsets count from here).
    pub fn tensor_data_start(&self) -> u64 {
        self.data_offset
    }

    /// The raw (possibly quantised) bytes of a tensor, straight from the map.
    /// A caller that keeps what it read asks
    /// [`Self::intact`] afterwards (a file cut short under the map reads as
    /// zeros past its new end).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.map.bytes()[start..start + info.byte_size() as usize]
    }

    /// Whether every byte read from this file so far was the file's: an
    /// error naming the file and `tensor` when it was cut short under the map.
    pub fn intact(&self, tensor: &str) -> Result<(), GgufError> {
        match self.map.check() {
            Some(message) => Err(self.cut_short(tensor, message)),
            None => Ok(()),
        }
    }

    fn cut_short(&self, tensor: &str, message: String) -> GgufError {
        GgufError::Shrunk {
            path: self.path.clone(),
            what: format!("tensor {tensor:?}"),
            message,
        }
    }

    /// A tensor dequantised to f32, with its row-major shape.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        // Checked before and after: a cut during the read is an error, not
        // the zeros it left.
        let data = self
            .map
            .read(|_| dequantize(info.ty, self.tensor_bytes(info), info.n_elements() as usize))
            .map_err(|message| self.cut_short(name, message))?
            .map_err(|source| GgufError::Dequant {
                path: self.path.clone(),
                tensor: name.to_string(),
                source,
            })?;
        // Copied out: its pages need not stay in this process's memory.
        self.map.release(self.tensor_bytes(info));
        Ok((info.shape(), data))
    }
}
