//! The text tokenizer: rebuilt from GGUF metadata, or read from `tokenizer.json`.

use crate::error::{ModelError, Result};
use evocomp_gguf::GgufFile;
use std::path::{Path, PathBuf};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// llama.cpp's split for Llama 3 style vocabularies ("llama-bpe").
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.token_type`, or "normal" (1) for every token.
fn token_types(f: &GgufFile, n: usize) -> Vec<i64> {
    match f
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
    {
        Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
        None => vec![1; n],
    }
}

fn id_of(f: &GgufFile, key: &str) -> Option<u32> {
    f.get(key).and_then(|v| v.as_u64()).map(|v| v as u32)
}

/// Control tokens (type 3) as special tokens and user-defined ones (type 4)
/// as plain added tokens, both matched whole, as transformers adds them.
fn add_marked_tokens(tk: &mut Tokenizer, tokens: &[String], types: &[i64]) -> Result<(), String> {
    let marked = |ty: i64| {
        tokens
            .iter()
            .zip(types)
            .filter(move |(_, t)| **t == ty)
            .map(|(s, _)| s.clone())
    };
    let control: Vec<AddedToken> = marked(3).map(|s| AddedToken::from(s, true)).collect();
    tk.add_special_tokens(control)
        .map_err(|e| format!("cannot add special tokens: {e}"))?;
    let user: Vec<AddedToken> = marked(4)
        .map(|s| AddedToken::from(s, false).normalized(false))
        .collect();
    tk.add_tokens(user)
        .map_err(|e| format!("cannot add user-defined tokens: {e}"))?;
    Ok(())
}

/// The merges a vocabulary without merges implies (transformers'
/// `generate_merges` with each token's rank as its score): every split of a
/// token into two tokens of the vocabulary, the merges of earlier tokens
/// first, then the longer left piece, then the longer right piece; ties keep
/// the order of the ids of the pieces.
fn merges_in_token_order(tokens: &[String], vocab: &Vocab) -> Vec<(String, String)> {
    // (rank of the merged token, left length, right length, left, right), in
    // the order transformers lists them before its stable sort.
    let mut all: Vec<(usize, usize, usize, u32, u32, &str, &str)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for token in tokens {
        // A dict iterates a repeated key at its first position, with the
        // value of its last: the token's id in `vocab`.
        if !seen.insert(token.as_str()) {
            continue;
        }
        let rank = vocab[token.as_str()] as usize;
        let mut local = Vec::new();
        for (cut, _) in token.char_indices().skip(1) {
            let (l, r) = token.split_at(cut);
            if let (Some(&il), Some(&ir)) = (vocab.get(l), vocab.get(r)) {
                local.push((rank, l.chars().count(), r.chars().count(), il, ir, l, r));
            }
        }
        local.sort_by_key(|m| (m.3, m.4));
        all.extend(local);
    }
    // Python's sort(reverse=True) on (score = -rank, len l, len r) is stable.
    all.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
    all.into_iter()
        .map(|m| (m.5.to_string(), m.6.to_string()))
        .collect()
}

/// Qwen 2's split (digits one by one).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer with its special ids.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    source: PathBuf,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source)
            .field("vocab", &self.vocab_size())
            .finish()
    }
}

impl TextTokenizer {
    /// Rebuild a GPT-2 style byte-level BPE tokenizer from `tokenizer.ggml.*`.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let path = f.path();
        let err = |message: String| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let model = f.get_str("tokenizer.ggml.model")?;
        let arch = f.get_str("general.architecture").unwrap_or("");
        if model == "llama" && matches!(arch, "gemma" | "gemma2" | "gemma3") {
            return Self::gemma_from_gguf(f);
        }
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model {model:?} of a {arch:?} file is not supported from GGUF (supported: \
                 \"gpt2\", byte-level BPE, and Gemma's sentencepiece \"llama\"); \
                 load the HF folder with its tokenizer.json instead"
            )));
        }
        let tokens = f.get_str_array("tokenizer.ggml.tokens")?;
        let merges = f.get_str_array("tokenizer.ggml.merges")?;
        let types = token_types(f, tokens.len());
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        if vocab.len() != tokens.len() {
            return Err(err("the vocabulary has duplicate tokens".into()));
        }
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| err(format!("merge {m:?} is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| err(format!("cannot build BPE: {e}")))?;
        let pre = f
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "default" | "gpt2" | "gpt-2" => byte_level.into(),
            // SmolLM: every digit alone, then GPT-2's split.
            "smollm" | "starcoder" => {
                Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
            }
            "llama-bpe" | "llama3" | "llama-v3" | "qwen2" | "deepseek-r1-qwen" => {
                let pattern = if pre.contains("qwen") {
                    QWEN2_SPLIT
                } else {
                    LLAMA3_SPLIT
                };
                let split = Split::new(
                    SplitPattern::Regex(pattern.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| err(format!("bad split regex: {e}")))?;
                Sequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, true, false).into(),
                ])
                .into()
            }
            other => {
                return Err(err(format!(
                    "pre-tokenizer {other:?} is not supported (supported: default, gpt2, smollm, llama-bpe, qwen2)"
                )));
            }
        };
        let mut tk = Tokenizer::new(bpe);
        tk.with_pre_tokenizer(Some(pre_tokenizer));
        tk.with_decoder(Some(ByteLevel::default()));
        let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        add_marked_tokens(&mut tk, &tokens, &types).map_err(err)?;
        Ok(Self {
            inner: tk,
            source: path.to_path_buf(),
            bos_id: id_of(f, "tokenizer.ggml.bos_token_id"),
            eos_id: id_of(f, "tokenizer.ggml.eos_token_id"),
        })
    }

    /// Gemma's sentencepiece vocabulary (`tokenizer.ggml.model` "llama"),
    /// rebuilt as transformers does from a GGUF: BPE with byte fallback over
    /// the whole text with spaces spelled "▁", no prefix space, and merges
    /// recovered from the vocabulary in the order the tokens are listed (the
    /// file has no merges, and Gemma's scores do not follow the merge order).
    fn gemma_from_gguf(f: &GgufFile) -> Result<Self> {
        let path = f.path();
        let err = |message: String| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        // A token of spaces only is stored with real spaces; the text's
        // spaces arrive as "▁", so it is respelled.
        let tokens: Vec<String> = f
            .get_str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(|t| {
                if t.contains(' ') && t.trim().is_empty() {
                    "\u{2581}".repeat(t.chars().count())
                } else {
                    t.to_string()
                }
            })
            .collect();
        let types = token_types(f, tokens.len());
        // The last index of a token wins, as in a Python dict.
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = merges_in_token_order(&tokens, &vocab);
        let unk = id_of(f, "tokenizer.ggml.unknown_token_id")
            .and_then(|i| tokens.get(i as usize).cloned())
            .unwrap_or_else(|| "<unk>".to_string());
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(unk)
            .fuse_unk(true)
            .byte_fallback(true)
            .build()
            .map_err(|e| err(format!("cannot build BPE: {e}")))?;
        let mut tk = Tokenizer::new(bpe);
        let space = Replace::new(" ", "\u{2581}").map_err(|e| err(e.to_string()))?;
        tk.with_normalizer(Some(space))
            .map_err(|e| err(format!("cannot set the normalizer: {e}")))?;
        let split = Split::new(
            SplitPattern::String(" ".into()),
            SplitDelimiterBehavior::MergedWithPrevious,
            false,
        )
        .map_err(|e| err(e.to_string()))?;
        tk.with_pre_tokenizer(Some(split));
        let unspace = Replace::new("\u{2581}", " ").map_err(|e| err(e.to_string()))?;
        tk.with_decoder(Some(DecoderSequence::new(vec![
            unspace.into(),
            ByteFallback::new().into(),
            Fuse::new().into(),
        ])));
        add_marked_tokens(&mut tk, &tokens, &types).map_err(err)?;
        Ok(Self {
            inner: tk,
            source: path.to_path_buf(),
            bos_id: id_of(f, "tokenizer.ggml.bos_token_id"),
            eos_id: id_of(f, "tokenizer.ggml.eos_token_id"),
        })
    }

    /// Read an HF `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::Tokenizer {
                path: path.to_path_buf(),
                message: "file not found".into(),
            });
        }
        let err = |message: String| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        crate::error::regular_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        // Check the JSON first: the tokenizers crate panics on some syntax
        // errors inside nested parts (its decoder reader unwraps them).
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| err(format!("not valid JSON: {e}")))?;
        // Whatever else it may refuse by panicking is an error here too.
        let inner = std::panic::catch_unwind(|| text.parse::<Tokenizer>())
            .map_err(|_| err("the tokenizers library could not read it".into()))?
            .map_err(|e| err(e.to_string()))?;
        let special = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        Ok(Self {
            bos_id: special(&["<|begin_of_text|>", "<s>", "<|endoftext|>", "<|im_start|>"]),
            eos_id: special(&["<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>"]),
            inner,
            source: path.to_path_buf(),
        })
    }

    /// Token ids of `text`, without special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.inner.decode(ids, false).map_err(|e| e.to_string())
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The tokenizer as HF `tokenizer.json` text (for export, and as a fingerprint).
    pub fn to_json(&self) -> Result<String, String> {
        self.inner.to_string(false).map_err(|e| e.to_string())
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn source(&self) -> &Path {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::byte_level_alphabet;
    use evocomp_gguf::GgufWriter;

    /// A byte-level vocabulary with one merge, "1" + "2" = "12", under `pre`.
    fn with_pre(pre: &str) -> TextTokenizer {
        let dir = tempfile::tempdir().unwrap();
        let mut tokens: Vec<String> = byte_level_alphabet()
            .iter()
            .map(|c| c.to_string())
            .collect();
        tokens.push("12".into());
        let mut g = GgufWriter::new();
        g.meta("general.architecture", "qwen2")
            .meta("tokenizer.ggml.model", "gpt2")
            .meta("tokenizer.ggml.pre", pre);
        g.meta_strings("tokenizer.ggml.tokens", &tokens);
        g.meta_strings("tokenizer.ggml.merges", &["1 2"]);
        let path = dir.path().join("t.gguf");
        g.write(&path).unwrap();
        TextTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap()
    }

    #[test]
    fn qwen2_splits_digits_one_by_one_and_llama3_in_threes() {
        let twelve = 256;
        let qwen = with_pre("qwen2").encode("x 12").unwrap();
        assert!(!qwen.contains(&twelve), "{qwen:?}");
        assert_eq!(qwen.len(), 4);
        let llama3 = with_pre("llama-bpe").encode("x 12").unwrap();
        assert!(llama3.contains(&twelve), "{llama3:?}");
        let e = TextTokenizer::from_gguf(&{
            let dir = tempfile::tempdir().unwrap();
            let mut g = GgufWriter::new();
            g.meta("general.architecture", "llama")
                .meta("tokenizer.ggml.model", "gpt2")
                .meta("tokenizer.ggml.pre", "tekken");
            g.meta_strings("tokenizer.ggml.tokens", &["a"]);
            g.meta_strings::<&str>("tokenizer.ggml.merges", &[]);
            let path = dir.path().join("t.gguf");
            g.write(&path).unwrap();
            // The file stays readable after the folder goes: it is mapped.
            GgufFile::open(&path).unwrap()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("tekken"), "{e}");
    }
}
