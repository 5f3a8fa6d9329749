//! Loading a model from a GGUF file or an HF folder (config.json + safetensors
//! + tokenizer.json).

use crate::config::{Family, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::llama::{LlamaModel, WeightDtype};
use crate::tokenizer::TextTokenizer;
use crate::weights::{
    HostTensor, LayerWeights, LinearKind, LlamaWeights, Names, TensorSource, WeightReader,
    unpermute_rope_rows,
};
use burn::tensor::Device;
use evocomp_gguf::GgufFile;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The on-disk format of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf,
    HfSafetensors,
}

/// One stored tensor, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// What a model file or folder holds, without dequantising its weights.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub format: ModelFormat,
    pub config: LlamaConfig,
    /// Every file the model is made of (hashed for the fingerprint).
    pub files: Vec<PathBuf>,
    pub tensors: Vec<TensorEntry>,
}

impl ModelInfo {
    /// sha256 over the model's files, in order: names the exact weights.
    pub fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        for f in &self.files {
            let mut file = std::fs::File::open(f).map_err(ModelError::io(f))?;
            loop {
                let n = file.read(&mut buf).map_err(ModelError::io(f))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    /// The metadata's block count must be the number of blocks the tensors
    /// hold: a count read from a file is checked before anything is
    /// allocated for it.
    fn check_blocks(&self) -> Result<()> {
        let prefix = match self.format {
            ModelFormat::Gguf => "blk.",
            ModelFormat::HfSafetensors => "model.layers.",
        };
        let held = self
            .tensors
            .iter()
            .filter_map(|t| {
                t.name
                    .strip_prefix(prefix)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |m| m + 1);
        if held != self.config.n_layers {
            return Err(ModelError::BadConfig {
                path: self.path.clone(),
                message: format!(
                    "the metadata says {} blocks, but the tensors hold {held}",
                    self.config.n_layers
                ),
            });
        }
        Ok(())
    }

    /// Tensor counts per stored dtype, e.g. `Q4_1: 210`.
    pub fn dtype_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for t in &self.tensors {
            *m.entry(t.dtype.clone()).or_insert(0) += 1;
        }
        m
    }
}

/// An opened model: its architecture, tokenizer and weight source. The
/// tensor table was checked against the config when it was opened (every
/// tensor present, every shape right); the weights are read only when asked
/// for: all of them on the host in f32 ([`LoadedModel::weights`], kept once
/// read), or streamed to a device one block at a time
/// ([`LoadedModel::to_device`]), so that a model on the device in bf16 never
/// has a whole f32 copy on the host beside it.
pub struct LoadedModel {
    pub info: ModelInfo,
    pub tokenizer: TextTokenizer,
    source: Box<dyn TensorSource>,
    names: Names,
    weights: OnceLock<LlamaWeights>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("path", &self.info.path)
            .field("family", &self.info.config.family)
            .field("weights_on_host", &self.weights.get().is_some())
            .finish()
    }
}

impl LoadedModel {
    pub fn config(&self) -> &LlamaConfig {
        &self.info.config
    }

    fn reader(&self) -> WeightReader<'_> {
        WeightReader::new(&self.info.config, self.source.as_ref(), &self.names)
    }

    /// Every weight on the host in f32, read on first use and kept.
    pub fn weights(&self) -> Result<&LlamaWeights> {
        if let Some(w) = self.weights.get() {
            return Ok(w);
        }
        let w = self.reader().read_all()?;
        Ok(self.weights.get_or_init(|| w))
    }

    /// Every weight on the host in f32, for a caller that consumes them: a
    /// copy of the held ones, else read from the file and not kept.
    pub fn read_weights(&self) -> Result<LlamaWeights> {
        match self.weights.get() {
            Some(w) => Ok(w.clone()),
            None => self.reader().read_all(),
        }
    }

    /// Whether the f32 host weights have been read (and are held).
    pub fn weights_on_host(&self) -> bool {
        self.weights.get().is_some()
    }

    /// Block `l`'s weights on the host in f32: a copy of the held ones when
    /// the host weights are read, else read from the file (nothing kept), so
    /// a caller going block by block never holds the whole model on the host.
    pub fn layer(&self, l: usize) -> Result<LayerWeights> {
        match self.weights.get() {
            Some(w) => w
                .layers
                .get(l)
                .cloned()
                .ok_or_else(|| ModelError::Unsupported {
                    path: self.info.path.clone(),
                    message: format!("no block {l} (the model has {})", w.layers.len()),
                }),
            None => self.reader().layer(l),
        }
    }

    /// The token embedding `[vocab, hidden]` in f32, as [`Self::layer`].
    pub fn embed(&self) -> Result<HostTensor> {
        match self.weights.get() {
            Some(w) => Ok(w.embed.clone()),
            None => self.reader().embed(),
        }
    }

    /// The output head `[vocab, hidden]` in f32 (None: tied to the
    /// embedding), as [`Self::layer`].
    pub fn lm_head(&self) -> Result<Option<HostTensor>> {
        match self.weights.get() {
            Some(w) => Ok(w.lm_head.clone()),
            None => self.reader().lm_head(),
        }
    }

    /// The model on `device`, its matrices in `dtype`. From the host weights
    /// when they are already held; otherwise streamed from the file: one
    /// block's f32 tensors (or the embedding's) on the host at a time.
    pub fn to_device(&self, device: &Device, dtype: WeightDtype) -> Result<LlamaModel> {
        if let Some(w) = self.weights.get() {
            return Ok(LlamaModel::with_dtype(self.config(), w, device, dtype)?);
        }
        let r = self.reader();
        let lm_head = r.lm_head()?;
        LlamaModel::build(
            self.config(),
            device,
            dtype,
            Cow::Owned(r.embed()?),
            lm_head.map(Cow::Owned),
            &r.final_norm()?,
            (0..self.config().n_layers).map(|l| r.layer(l)),
        )
    }
}

fn detect(path: &Path) -> Result<ModelFormat> {
    if path.is_dir() {
        if path.join("config.json").exists() {
            return Ok(ModelFormat::HfSafetensors);
        }
        return Err(ModelError::Unsupported {
            path: path.to_path_buf(),
            message: "folder has no config.json (expected an HF model folder or a .gguf file)"
                .into(),
        });
    }
    if !path.exists() {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        });
    }
    Ok(ModelFormat::Gguf)
}

/// Read a model's architecture and tensor table.
pub fn inspect_model(path: impl AsRef<Path>) -> Result<ModelInfo> {
    let path = path.as_ref();
    match detect(path)? {
        ModelFormat::Gguf => {
            let f = GgufFile::open(path)?;
            gguf_info(&f)
        }
        ModelFormat::HfSafetensors => Ok(HfFolder::open(path)?.info),
    }
}

/// Open a model: its config and tokenizer read, its tensor table checked
/// against the config (names and shapes); the weights are read on demand.
pub fn load_model(path: impl AsRef<Path>) -> Result<LoadedModel> {
    let path = path.as_ref();
    let (info, tokenizer, source, names): (_, _, Box<dyn TensorSource>, _) = match detect(path)? {
        ModelFormat::Gguf => {
            let f = GgufFile::open(path)?;
            let info = gguf_info(&f)?;
            let tokenizer = TextTokenizer::from_gguf(&f)?;
            let src = GgufSource {
                n_heads: info.config.n_heads,
                n_kv_heads: info.config.n_kv_heads,
                permuted_qk: info.config.family.gguf_permutes_qk(),
                file: f,
            };
            (info, tokenizer, Box::new(src), gguf_names())
        }
        ModelFormat::HfSafetensors => {
            let folder = HfFolder::open(path)?;
            let tokenizer = TextTokenizer::from_file(&path.join("tokenizer.json"))?;
            let names = hf_names(folder.info.config.family);
            (folder.info.clone(), tokenizer, Box::new(folder), names)
        }
    };
    WeightReader::new(&info.config, source.as_ref(), &names).check()?;
    check_vocab(&info, &tokenizer)?;
    Ok(LoadedModel {
        info,
        tokenizer,
        source,
        names,
        weights: OnceLock::new(),
    })
}

/// llama.cpp's tensor names (every family evocomp reads uses the same ones).
fn gguf_names() -> Names {
    Names {
        embed: "token_embd.weight".into(),
        final_norm: "output_norm.weight".into(),
        lm_head: "output.weight".into(),
        attn_norm: |l| format!("blk.{l}.attn_norm.weight"),
        mlp_norm: |l| format!("blk.{l}.ffn_norm.weight"),
        linear: |k, l| k.gguf_name(l),
        post_norms: [
            |l| format!("blk.{l}.post_attention_norm.weight"),
            |l| format!("blk.{l}.post_ffw_norm.weight"),
        ],
        qk_norms: [
            |l| format!("blk.{l}.attn_q_norm.weight"),
            |l| format!("blk.{l}.attn_k_norm.weight"),
        ],
        qkv_bias: [
            |l| format!("blk.{l}.attn_q.bias"),
            |l| format!("blk.{l}.attn_k.bias"),
            |l| format!("blk.{l}.attn_v.bias"),
        ],
        // llama.cpp's converter stores Gemma's norms as 1 + w already.
        norm_offset: 0.0,
    }
}

/// transformers' tensor names for `family`. In Gemma, `post_attention_layernorm`
/// is the attention output's norm and the MLP's input norm is
/// `pre_feedforward_layernorm`; in Llama the former is the MLP's input norm.
fn hf_names(family: Family) -> Names {
    let gemma = family == Family::Gemma3;
    Names {
        embed: "model.embed_tokens.weight".into(),
        final_norm: "model.norm.weight".into(),
        lm_head: "lm_head.weight".into(),
        attn_norm: |l| format!("model.layers.{l}.input_layernorm.weight"),
        mlp_norm: if gemma {
            |l| format!("model.layers.{l}.pre_feedforward_layernorm.weight")
        } else {
            |l| format!("model.layers.{l}.post_attention_layernorm.weight")
        },
        linear: |k, l| k.hf_name(l),
        post_norms: [
            |l| format!("model.layers.{l}.post_attention_layernorm.weight"),
            |l| format!("model.layers.{l}.post_feedforward_layernorm.weight"),
        ],
        qk_norms: [
            |l| format!("model.layers.{l}.self_attn.q_norm.weight"),
            |l| format!("model.layers.{l}.self_attn.k_norm.weight"),
        ],
        qkv_bias: [
            |l| format!("model.layers.{l}.self_attn.q_proj.bias"),
            |l| format!("model.layers.{l}.self_attn.k_proj.bias"),
            |l| format!("model.layers.{l}.self_attn.v_proj.bias"),
        ],
        norm_offset: if gemma { 1.0 } else { 0.0 },
    }
}

fn check_vocab(info: &ModelInfo, tk: &TextTokenizer) -> Result<()> {
    if tk.vocab_size() > info.config.vocab {
        return Err(ModelError::BadConfig {
            path: tk.source().to_path_buf(),
            message: format!(
                "tokenizer has {} tokens but the model's vocab is {}",
                tk.vocab_size(),
                info.config.vocab
            ),
        });
    }
    Ok(())
}

fn gguf_info(f: &GgufFile) -> Result<ModelInfo> {
    let config = LlamaConfig::from_gguf(f)?;
    let info = ModelInfo {
        path: f.path().to_path_buf(),
        format: ModelFormat::Gguf,
        config,
        files: vec![f.path().to_path_buf()],
        tensors: f
            .tensors()
            .iter()
            .map(|t| TensorEntry {
                name: t.name.clone(),
                dtype: t.ty.to_string(),
                shape: t.shape(),
            })
            .collect(),
    };
    info.check_blocks()?;
    Ok(info)
}

struct GgufSource {
    file: GgufFile,
    n_heads: usize,
    n_kv_heads: usize,
    permuted_qk: bool,
}

impl TensorSource for GgufSource {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.file.tensor_info(name).map(|t| t.shape())
    }

    fn read(&self, name: &str) -> Result<Option<HostTensor>> {
        if self.file.tensor_info(name).is_none() {
            return Ok(None);
        }
        let (shape, data) = self.file.dequantize(name)?;
        let t = HostTensor::new(shape, data);
        // Q and K rows are stored permuted for llama.cpp's RoPE.
        let heads = if !self.permuted_qk {
            None
        } else if name.ends_with(".attn_q.weight") {
            Some(self.n_heads)
        } else if name.ends_with(".attn_k.weight") {
            Some(self.n_kv_heads)
        } else {
            None
        };
        Ok(Some(match heads {
            Some(n)
                if t.shape.len() == 2
                    && t.shape[0].is_multiple_of(n)
                    && (t.shape[0] / n).is_multiple_of(2) =>
            {
                unpermute_rope_rows(&t, n)
            }
            _ => t,
        }))
    }
}

/// An HF folder: config.json, one or more safetensors shards.
struct HfFolder {
    info: ModelInfo,
    /// (file, map), and per tensor: its index in `info.tensors` and the shard holding it.
    /// Each shard's path and map (a read that finds it cut short is an error).
    shards: Vec<(PathBuf, evocomp_gguf::Mapped)>,
    location: BTreeMap<String, (usize, usize)>,
}

impl HfFolder {
    fn open(dir: &Path) -> Result<Self> {
        let config = LlamaConfig::from_hf_json(&dir.join("config.json"))?;
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            crate::error::regular_file(&index)?;
            let text = std::fs::read_to_string(&index).map_err(ModelError::io(&index))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| ModelError::Json {
                    path: index.clone(),
                    source,
                })?;
            let map = v["weight_map"]
                .as_object()
                .ok_or_else(|| ModelError::BadConfig {
                    path: index.clone(),
                    message: "no \"weight_map\" object".into(),
                })?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            // A shard is a file of this folder: a name with a separator or
            // `..` would reach anywhere.
            if let Some(bad) = files.iter().find(|f| {
                let p = Path::new(f.as_str());
                p.components().count() != 1
                    || !matches!(p.components().next(), Some(std::path::Component::Normal(_)))
            }) {
                return Err(ModelError::BadConfig {
                    path: index.clone(),
                    message: format!(
                        "weight_map names shard {bad:?}, which is not a file name in this folder"
                    ),
                });
            }
            files.into_iter().map(|f| dir.join(f)).collect()
        } else if dir.join("model.safetensors").exists() {
            vec![dir.join("model.safetensors")]
        } else {
            return Err(ModelError::Unsupported {
                path: dir.to_path_buf(),
                message: "no model.safetensors or model.safetensors.index.json".into(),
            });
        };
        let mut shards = Vec::new();
        let mut location = BTreeMap::new();
        let mut tensors = Vec::new();
        for (i, f) in files.iter().enumerate() {
            crate::error::regular_file(f)?;
            let file = std::fs::File::open(f).map_err(ModelError::io(f))?;
            // SAFETY: read-only map of a file we do not modify while loading;
            // one cut short under it is an error at the next read (`Mapped`).
            let mmap = unsafe { evocomp_gguf::Mapped::map(file) }.map_err(ModelError::io(f))?;
            let st =
                SafeTensors::deserialize(mmap.bytes()).map_err(|e| ModelError::Safetensors {
                    path: f.clone(),
                    message: e.to_string(),
                })?;
            let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
            names.sort();
            for name in names {
                let view = st.tensor(&name).map_err(|e| ModelError::Safetensors {
                    path: f.clone(),
                    message: e.to_string(),
                })?;
                tensors.push(TensorEntry {
                    name: name.clone(),
                    dtype: format!("{:?}", view.dtype()),
                    shape: view.shape().to_vec(),
                });
                location.insert(name, (tensors.len() - 1, i));
            }
            drop(st);
            if let Some(message) = mmap.check() {
                return Err(ModelError::Safetensors {
                    path: f.clone(),
                    message,
                });
            }
            shards.push((f.clone(), mmap));
        }
        let mut all_files = vec![dir.join("config.json")];
        all_files.extend(files);
        let info = ModelInfo {
            path: dir.to_path_buf(),
            format: ModelFormat::HfSafetensors,
            config,
            files: all_files,
            tensors,
        };
        info.check_blocks()?;
        Ok(Self {
            info,
            shards,
            location,
        })
    }
}

impl TensorSource for HfFolder {
    fn path(&self) -> &Path {
        &self.info.path
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let &(i, _) = self.location.get(name)?;
        self.info.tensors.get(i).map(|t| t.shape.clone())
    }

    fn read(&self, name: &str) -> Result<Option<HostTensor>> {
        let Some(&(_, i)) = self.location.get(name) else {
            return Ok(None);
        };
        let (path, mmap) = &self.shards[i];
        let bad = |message: String| ModelError::Safetensors {
            path: path.clone(),
            message,
        };
        let read = mmap.read(|bytes| -> Result<(Vec<usize>, Vec<f32>)> {
            let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
            let view = st.tensor(name).map_err(|e| bad(e.to_string()))?;
            let bytes = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(ModelError::UnsupportedDtype {
                        path: path.clone(),
                        name: name.to_string(),
                        dtype: format!("{other:?}"),
                    });
                }
            };
            // Copied out: its pages need not stay in this process's memory.
            mmap.release(bytes);
            Ok((view.shape().to_vec(), data))
        });
        let (shape, data) = read.map_err(|m| bad(format!("reading tensor {name:?}: {m}")))??;
        Ok(Some(HostTensor::new(shape, data)))
    }
}

/// Write weights as an HF folder: config.json + model.safetensors (f32).
/// The tokenizer is written by the caller (it may come from elsewhere).
pub fn save_hf_safetensors(cfg: &LlamaConfig, w: &LlamaWeights, dir: &Path) -> Result<()> {
    save_hf_safetensors_as(cfg, w, dir, WeightDtype::F32)
}

/// [`save_hf_safetensors`] with every tensor stored in `dtype` (rounded to
/// nearest even; zeros stay zeros) and `torch_dtype` saying so.
pub fn save_hf_safetensors_as(
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    dir: &Path,
    dtype: WeightDtype,
) -> Result<()> {
    save_hf_safetensors_with(
        cfg,
        w,
        dir,
        dtype,
        &BTreeMap::new(),
        serde_json::Value::Null,
    )
}

/// A tensor written as given: its safetensors name, dtype, shape and
/// little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// [`save_hf_safetensors_as`] where the tensors in `replace` (keyed by the
/// HF name they replace, e.g. `model.layers.0.self_attn.q_proj.weight`) are
/// written instead of those weights, and the fields of `config` (an object,
/// or null) are added to config.json: how a compressed format (packed
/// integer weights with their scales) is written. Every key of `replace`
/// must name a weight of the model.
/// The folder inside an HF export where model.safetensors is written before
/// it is moved into place (left behind only by a write that was killed).
pub const PARTIAL_DIR: &str = ".evocomp-partial";

pub fn save_hf_safetensors_with(
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    dir: &Path,
    dtype: WeightDtype,
    replace: &BTreeMap<String, Vec<RawTensor>>,
    config: serde_json::Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(ModelError::io(dir))?;
    let names = hf_names(cfg.family);
    // (name, tensor, is a norm: stored minus the offset)
    let mut tensors: Vec<(String, &HostTensor, bool)> = vec![
        (names.embed.clone(), &w.embed, false),
        (names.final_norm.clone(), &w.final_norm, true),
    ];
    if let Some(h) = &w.lm_head {
        tensors.push((names.lm_head.clone(), h, false));
    }
    for (l, layer) in w.layers.iter().enumerate() {
        tensors.push(((names.attn_norm)(l), &layer.attn_norm, true));
        tensors.push(((names.mlp_norm)(l), &layer.mlp_norm, true));
        for (name, t) in names
            .post_norms
            .iter()
            .zip(layer.post_norms.iter().flatten())
        {
            tensors.push((name(l), t, true));
        }
        for (name, t) in names.qk_norms.iter().zip(layer.qk_norms.iter().flatten()) {
            tensors.push((name(l), t, true));
        }
        for (name, t) in names.qkv_bias.iter().zip(layer.qkv_bias.iter().flatten()) {
            tensors.push((name(l), t, false));
        }
        for k in LinearKind::ALL {
            tensors.push(((names.linear)(k, l), layer.linear(k), false));
        }
    }
    let st_path = dir.join("model.safetensors");
    if let Some(unknown) = replace
        .keys()
        .find(|k| !tensors.iter().any(|(n, _, _)| n == *k))
    {
        return Err(ModelError::Safetensors {
            path: st_path,
            message: format!("{unknown}: not a weight of this model, so it cannot be replaced"),
        });
    }
    let (st_dtype, torch_dtype) = match dtype {
        WeightDtype::F32 => (Dtype::F32, "float32"),
        WeightDtype::Bf16 => (Dtype::BF16, "bfloat16"),
        WeightDtype::F16 => (Dtype::F16, "float16"),
    };
    let mut raw: Vec<RawTensor> = Vec::new();
    let tensors: Vec<(String, &HostTensor, bool)> = tensors
        .into_iter()
        .filter(|(n, _, _)| match replace.get(n) {
            Some(r) => {
                raw.extend(r.iter().cloned());
                false
            }
            None => true,
        })
        .collect();
    let mut bytes: Vec<(String, Dtype, Vec<u8>, Vec<usize>)> = tensors
        .into_iter()
        .map(|(n, t, is_norm)| {
            let offset = if is_norm { names.norm_offset } else { 0.0 };
            let values = t.data.iter().map(|v| v - offset);
            let bytes: Vec<u8> = match dtype {
                WeightDtype::F32 => values.flat_map(f32::to_le_bytes).collect(),
                WeightDtype::Bf16 => values
                    .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
                    .collect(),
                WeightDtype::F16 => values
                    .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
            };
            (n, st_dtype, bytes, t.shape.clone())
        })
        .collect();
    bytes.extend(raw.into_iter().map(|r| (r.name, r.dtype, r.bytes, r.shape)));
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = Vec::new();
    for (n, dt, b, s) in &bytes {
        let view = safetensors::tensor::TensorView::new(*dt, s.clone(), b).map_err(|e| {
            ModelError::Safetensors {
                path: st_path.clone(),
                message: format!("{n}: {e}"),
            }
        })?;
        views.push((n.clone(), view));
    }
    // Written in a folder of its own and moved into place: a write killed
    // midway leaves its temporary file there, where the next write into
    // `dir` (or an export's check of it) removes it, not a hidden file
    // among the user's.
    let partial = dir.join(PARTIAL_DIR);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(ModelError::io(&partial))?;
    }
    std::fs::create_dir(&partial).map_err(ModelError::io(&partial))?;
    let staged = partial.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &staged).map_err(|e| ModelError::Safetensors {
        path: st_path.clone(),
        message: e.to_string(),
    })?;
    std::fs::rename(&staged, &st_path).map_err(ModelError::io(&st_path))?;
    std::fs::remove_dir(&partial).map_err(ModelError::io(&partial))?;
    let cfg_path = dir.join("config.json");
    let mut json = cfg.to_hf_json();
    json["torch_dtype"] = torch_dtype.into();
    if let (Some(json), serde_json::Value::Object(extra)) = (json.as_object_mut(), config) {
        json.extend(extra);
    }
    let text = serde_json::to_string_pretty(&json).expect("json");
    std::fs::write(&cfg_path, text).map_err(ModelError::io(&cfg_path))?;
    Ok(())
}
