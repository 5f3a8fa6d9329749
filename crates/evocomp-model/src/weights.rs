//! Host-side f32 weights in PyTorch orientation (`[out, in]` for linears),
//! with Q/K rows in HF order (GGUF's RoPE permutation undone).

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use std::path::Path;

/// A dense f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} does not match {} values",
            data.len()
        );
        Self { shape, data }
    }

    /// The transpose of a 2-D tensor.
    pub fn transposed(&self) -> HostTensor {
        assert_eq!(self.shape.len(), 2, "transpose needs a 2-D tensor");
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0.0; r * c];
        // Blocked to stay cache-friendly on large matrices.
        const B: usize = 32;
        for i0 in (0..r).step_by(B) {
            for j0 in (0..c).step_by(B) {
                for i in i0..(i0 + B).min(r) {
                    for j in j0..(j0 + B).min(c) {
                        out[j * r + i] = self.data[i * c + j];
                    }
                }
            }
        }
        HostTensor::new(vec![c, r], out)
    }
}

pub use crate::linear::LinearKind;

impl LinearKind {
    /// `[out, in]` for this layer under `cfg`.
    pub fn shape(self, cfg: &LlamaConfig) -> [usize; 2] {
        let h = cfg.hidden;
        match self {
            LinearKind::Q => [cfg.q_dim(), h],
            LinearKind::K | LinearKind::V => [cfg.kv_dim(), h],
            LinearKind::O => [h, cfg.q_dim()],
            LinearKind::Gate | LinearKind::Up => [cfg.intermediate, h],
            LinearKind::Down => [h, cfg.intermediate],
        }
    }
}

/// The weights of one block. Every norm weight is the factor the normalised
/// values are multiplied by (for Gemma that is 1 + the stored HF weight).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    pub attn_norm: HostTensor,
    pub mlp_norm: HostTensor,
    /// Indexed by `LinearKind as usize`, each `[out, in]`.
    pub linears: [HostTensor; 7],
    /// The norms of the two sub-blocks' outputs (`post_norms`), `[hidden]`.
    pub post_norms: Option<[HostTensor; 2]>,
    /// The per-head query and key norms (`qk_norm`), `[head_dim]`.
    pub qk_norms: Option<[HostTensor; 2]>,
    /// The q, k and v projections' biases (`qkv_bias`), `[out]`.
    pub qkv_bias: Option<[HostTensor; 3]>,
}

impl LayerWeights {
    pub fn linear(&self, kind: LinearKind) -> &HostTensor {
        &self.linears[kind as usize]
    }

    pub fn linear_mut(&mut self, kind: LinearKind) -> &mut HostTensor {
        &mut self.linears[kind as usize]
    }
}

/// All weights of a Llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaWeights {
    /// `[vocab, hidden]`.
    pub embed: HostTensor,
    pub layers: Vec<LayerWeights>,
    pub final_norm: HostTensor,
    /// `[vocab, hidden]`; `None` when tied to `embed`.
    pub lm_head: Option<HostTensor>,
}

/// Where the weights come from, with names in one format's convention.
pub(crate) trait TensorSource: Send + Sync {
    fn path(&self) -> &Path;
    /// The tensor's stored shape, or `None` if absent (reads no data).
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor as f32 with its row-major shape, or `None` if absent.
    fn read(&self, name: &str) -> Result<Option<HostTensor>>;
}

/// The names of one format.
#[derive(Clone)]
pub(crate) struct Names {
    pub embed: String,
    pub final_norm: String,
    pub lm_head: String,
    pub attn_norm: fn(usize) -> String,
    pub mlp_norm: fn(usize) -> String,
    pub linear: fn(LinearKind, usize) -> String,
    /// Post-attention and post-MLP norms.
    pub post_norms: [fn(usize) -> String; 2],
    /// Query and key norms.
    pub qk_norms: [fn(usize) -> String; 2],
    /// Biases of q, k and v.
    pub qkv_bias: [fn(usize) -> String; 3],
    /// Added to every norm weight as read (HF Gemma stores w for 1 + w).
    pub norm_offset: f32,
}

/// Reads a model's weights one part at a time (the embedding, a block, the
/// final norm, the head), each checked against the config, so a caller can
/// stream them to a device without holding the whole model on the host.
///
/// `check` walks the same parts against the tensor table only (names and
/// shapes, no data): a missing or misshapen tensor is found when the model
/// is opened, before anything is dequantised.
pub(crate) struct WeightReader<'a> {
    pub cfg: &'a LlamaConfig,
    pub src: &'a dyn TensorSource,
    pub names: &'a Names,
    /// Check names and shapes only; every tensor returned is an empty
    /// placeholder, dropped at once by `check`.
    dry: bool,
}

impl<'a> WeightReader<'a> {
    pub fn new(cfg: &'a LlamaConfig, src: &'a dyn TensorSource, names: &'a Names) -> Self {
        Self {
            cfg,
            src,
            names,
            dry: false,
        }
    }

    fn get(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let missing = || ModelError::MissingTensor {
            path: self.src.path().to_path_buf(),
            name: name.to_string(),
        };
        if self.dry {
            let shape = self.src.shape(name).ok_or_else(missing)?;
            check_shape(self.src.path(), name, &shape, expected)?;
            return Ok(HostTensor {
                shape: expected.to_vec(),
                data: Vec::new(),
            });
        }
        let t = self.src.read(name)?.ok_or_else(missing)?;
        check_shape(self.src.path(), name, &t.shape, expected)?;
        Ok(t)
    }

    fn norm(&self, name: &str, len: usize) -> Result<HostTensor> {
        let mut t = self.get(name, &[len])?;
        if self.names.norm_offset != 0.0 {
            t.data.iter_mut().for_each(|v| *v += self.names.norm_offset);
        }
        t.shape = vec![len];
        Ok(t)
    }

    /// `[vocab, hidden]`.
    pub fn embed(&self) -> Result<HostTensor> {
        self.get(&self.names.embed, &[self.cfg.vocab, self.cfg.hidden])
    }

    pub fn final_norm(&self) -> Result<HostTensor> {
        self.norm(&self.names.final_norm, self.cfg.hidden)
    }

    /// `[vocab, hidden]`; `None` when tied to the embedding.
    pub fn lm_head(&self) -> Result<Option<HostTensor>> {
        if self.cfg.tied_embeddings {
            return Ok(None);
        }
        self.get(&self.names.lm_head, &[self.cfg.vocab, self.cfg.hidden])
            .map(Some)
    }

    /// Block `l`.
    pub fn layer(&self, l: usize) -> Result<LayerWeights> {
        let (cfg, names, h) = (self.cfg, self.names, self.cfg.hidden);
        let attn_norm = self.norm(&(names.attn_norm)(l), h)?;
        let mlp_norm = self.norm(&(names.mlp_norm)(l), h)?;
        let [q, k, v, o, g, u, d] =
            LinearKind::ALL.map(|k| self.get(&(names.linear)(k, l), &k.shape(cfg)));
        let post_norms = if cfg.post_norms {
            let [a, m] = names.post_norms;
            Some([self.norm(&a(l), h)?, self.norm(&m(l), h)?])
        } else {
            None
        };
        let qk_norms = if cfg.qk_norm {
            let [qn, kn] = names.qk_norms;
            Some([
                self.norm(&qn(l), cfg.head_dim)?,
                self.norm(&kn(l), cfg.head_dim)?,
            ])
        } else {
            None
        };
        let qkv_bias = if cfg.qkv_bias {
            let [qb, kb, vb] = names.qkv_bias;
            let vec = |name: String, len: usize| -> Result<HostTensor> {
                let mut t = self.get(&name, &[len])?;
                t.shape = vec![len];
                Ok(t)
            };
            Some([
                vec(qb(l), cfg.q_dim())?,
                vec(kb(l), cfg.kv_dim())?,
                vec(vb(l), cfg.kv_dim())?,
            ])
        } else {
            None
        };
        Ok(LayerWeights {
            attn_norm,
            mlp_norm,
            linears: [q?, k?, v?, o?, g?, u?, d?],
            post_norms,
            qk_norms,
            qkv_bias,
        })
    }

    /// Every tensor the model needs is in the table with the config's shape.
    pub fn check(&self) -> Result<()> {
        let dry = WeightReader { dry: true, ..*self };
        dry.embed()?;
        for l in 0..self.cfg.n_layers {
            dry.layer(l)?;
        }
        dry.final_norm()?;
        dry.lm_head()?;
        Ok(())
    }

    /// Every weight, on the host.
    pub fn read_all(&self) -> Result<LlamaWeights> {
        Ok(LlamaWeights {
            embed: self.embed()?,
            layers: (0..self.cfg.n_layers)
                .map(|l| self.layer(l))
                .collect::<Result<_>>()?,
            final_norm: self.final_norm()?,
            lm_head: self.lm_head()?,
        })
    }
}

fn check_shape(path: &Path, name: &str, shape: &[usize], expected: &[usize]) -> Result<()> {
    // A 1-D norm may be stored as [1, h] by some exporters.
    let squeezed: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
    let want: Vec<usize> = expected.iter().copied().filter(|&d| d != 1).collect();
    if shape != expected && !(expected.len() == 1 && squeezed == want) {
        return Err(ModelError::ShapeMismatch {
            path: path.to_path_buf(),
            name: name.to_string(),
            expected: expected.to_vec(),
            found: shape.to_vec(),
        });
    }
    Ok(())
}

/// Undo llama.cpp's RoPE row permutation of a Q or K weight `[n_head * head_dim, in]`.
///
/// llama.cpp's converter stores HF row `half * head_dim/2 + i` of each head at
/// row `2 * i + half`, so that RoPE can rotate adjacent pairs. Reading GGUF
/// row `2 * i + half` back into HF row `half * head_dim/2 + i` restores HF's
/// rotate-half layout.
pub fn unpermute_rope_rows(w: &HostTensor, n_head: usize) -> HostTensor {
    permute_rows(w, n_head, false)
}

/// Apply llama.cpp's permutation (the inverse of [`unpermute_rope_rows`]).
pub fn permute_rope_rows(w: &HostTensor, n_head: usize) -> HostTensor {
    permute_rows(w, n_head, true)
}

fn permute_rows(w: &HostTensor, n_head: usize, to_gguf: bool) -> HostTensor {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    let mut out = vec![0.0; rows * cols];
    for (dst, src) in rope_row_sources(rows, n_head, to_gguf)
        .into_iter()
        .enumerate()
    {
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&w.data[src * cols..(src + 1) * cols]);
    }
    HostTensor::new(w.shape.clone(), out)
}

/// Rows of any fixed byte size (quantized blocks included) of a Q/K weight of
/// `rows` rows and `n_head` heads, put into llama.cpp's RoPE order
/// (`to_gguf`) or back.
pub fn permute_rope_row_bytes(bytes: &[u8], rows: usize, n_head: usize, to_gguf: bool) -> Vec<u8> {
    let row = bytes.len() / rows;
    rope_row_sources(rows, n_head, to_gguf)
        .into_iter()
        .flat_map(|src| &bytes[src * row..(src + 1) * row])
        .copied()
        .collect()
}

/// For each row of a permuted (`to_gguf`) or unpermuted Q/K weight of
/// `rows` rows and `n_head` heads, the row of the other layout it comes
/// from. Rows move whole, so this also orders rows of quantized blocks.
pub fn rope_row_sources(rows: usize, n_head: usize, to_gguf: bool) -> Vec<usize> {
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut src_of = vec![0usize; rows];
    for h in 0..n_head {
        for part in 0..2 {
            for i in 0..half {
                let hf = h * head_dim + part * half + i;
                let gguf = h * head_dim + 2 * i + part;
                let (dst, src) = if to_gguf { (gguf, hf) } else { (hf, gguf) };
                src_of[dst] = src;
            }
        }
    }
    src_of
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_round_trips_and_matches_llama_cpp() {
        // 2 heads of dim 4, 3 columns; row r holds r in every column.
        let rows = 8;
        let w = HostTensor::new(
            vec![rows, 3],
            (0..rows).flat_map(|r| [r as f32; 3]).collect(),
        );
        let g = permute_rope_rows(&w, 2);
        // llama.cpp: w.reshape(n_head, 2, hd/2, dim).swapaxes(1, 2):
        // within a head, HF rows [0,1 | 2,3] become [0,2,1,3].
        let order: Vec<f32> = g.data.chunks(3).map(|r| r[0]).collect();
        assert_eq!(order, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(unpermute_rope_rows(&g, 2), w);
        // head_dim 8: a non-trivial permutation whose inverse differs from itself.
        let w = HostTensor::new(vec![8, 1], (0..8).map(|r| r as f32).collect());
        let g = permute_rope_rows(&w, 1);
        assert_eq!(g.data, [0.0, 4.0, 1.0, 5.0, 2.0, 6.0, 3.0, 7.0]);
        assert_ne!(unpermute_rope_rows(&w, 1), g);
        assert_eq!(unpermute_rope_rows(&g, 1), w);
    }

    #[test]
    fn transpose() {
        let t = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let tt = t.transposed();
        assert_eq!(tt.shape, [3, 2]);
        assert_eq!(tt.data, [1., 4., 2., 5., 3., 6.]);
        assert_eq!(tt.transposed(), t);
    }
}
