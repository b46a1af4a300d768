//! The model directory, read and checked before any weight is loaded.
//!
//! The layout is sentence-transformers' as PyLate writes it:
//!
//! | file | what it says |
//! |---|---|
//! | `modules.json` | the pipeline: a `Transformer` (the directory itself), then any of `Dense` and `Normalize`, in order |
//! | `config.json` | the transformer: `model_type` `bert` or `modernbert` and its sizes |
//! | `model.safetensors` | the transformer's weights |
//! | `tokenizer.json` | the tokenizer (its own padding and truncation are ignored: the late-interaction lengths rule) |
//! | `config_sentence_transformers.json` | PyLate's late-interaction settings ([`Settings`]) |
//! | `<dense>/config.json`, `<dense>/model.safetensors` | a Dense layer: `in_features`, `out_features`, `bias`, `activation_function`; `linear.weight`, `linear.bias` |
//!
//! A `Normalize` module L2-normalises each token vector where it sits. PyLate
//! drops the module (in sentence-transformers it acts on a pooled sentence
//! embedding only); the two agree wherever it is last, as in every released
//! ColBERT model, and only the evaldata's encoder, whose vectors were made by
//! normalising before its projection, puts it in the middle.
//!
//! Anything else in `modules.json` (a Pooling layer, a custom module) is
//! refused with its name: an encoder that skipped a module would produce
//! vectors the model was never trained to produce.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// PyLate's late-interaction settings (`config_sentence_transformers.json`).
/// A key the file lacks takes PyLate's own default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Text of the token inserted after `[CLS]` in queries; none when empty.
    pub query_prefix: String,
    /// Text of the token inserted after `[CLS]` in documents; none when empty.
    pub document_prefix: String,
    /// Query length in tokens, special and prefix tokens included.
    pub query_length: usize,
    /// Document length in tokens, special and prefix tokens included.
    pub document_length: usize,
    /// Pad every query to `query_length` with `[MASK]` tokens, each of which
    /// gives an output vector.
    pub do_query_expansion: bool,
    /// Whether the other tokens attend to the `[MASK]` expansion tokens.
    pub attend_to_expansion_tokens: bool,
    /// Words whose tokens give no output vector in documents.
    pub skiplist_words: Vec<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            query_prefix: "[Q] ".into(),
            document_prefix: "[D] ".into(),
            query_length: 32,
            document_length: 180,
            do_query_expansion: true,
            attend_to_expansion_tokens: false,
            skiplist_words: PUNCTUATION.chars().map(String::from).collect(),
        }
    }
}

/// Python's `string.punctuation`, PyLate's default skiplist.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// An activation after a Dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Tanh,
    Relu,
    Gelu,
    Sigmoid,
}

impl Activation {
    fn parse(name: &str) -> Option<Activation> {
        Some(match name.rsplit('.').next()? {
            "Identity" => Activation::Identity,
            "Tanh" => Activation::Tanh,
            "ReLU" => Activation::Relu,
            "GELU" => Activation::Gelu,
            "Sigmoid" => Activation::Sigmoid,
            _ => return None,
        })
    }
}

/// One module after the transformer, in pipeline order.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    Normalize,
    /// `activation(x·Wᵀ + b)`, plus `x` (or `x·Rᵀ` when the sizes differ)
    /// with PyLate's `use_residual`.
    Dense {
        dir: PathBuf,
        in_features: usize,
        out_features: usize,
        bias: bool,
        activation: Activation,
        residual: bool,
    },
}

/// Everything read from the directory before loading weights.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    /// `bert` or `modernbert`.
    pub architecture: String,
    /// `config.json`, parsed.
    pub config: serde_json::Value,
    pub heads: Vec<Head>,
    pub settings: Settings,
    /// `do_lower_case` of `sentence_bert_config.json`: texts are lowercased
    /// before tokenizing.
    pub lowercase: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default = "identity")]
    activation_function: String,
    #[serde(default)]
    use_residual: bool,
}

fn yes() -> bool {
    true
}

fn identity() -> String {
    "torch.nn.modules.linear.Identity".into()
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::model(path, missing_or(e)))?;
    serde_json::from_str(&text).map_err(|e| Error::model(path, format!("does not parse: {e}")))
}

fn missing_or(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "missing (a sentence-transformers / PyLate model directory has it)".into()
    } else {
        format!("cannot be read: {e}")
    }
}

/// A file the layout needs, refused by name when absent.
pub(crate) fn required(path: PathBuf) -> Result<PathBuf> {
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(Error::model(&path, "is not a file")),
        Err(e) => Err(Error::model(&path, missing_or(e))),
    }
}

/// The architectures this encoder runs, by `config.json`'s `model_type`.
pub const ARCHITECTURES: &[&str] = &["bert", "modernbert"];

impl Layout {
    /// Reads and checks the directory's JSON files; the weights are opened later.
    pub fn read(dir: &Path) -> Result<Layout> {
        if !dir.is_dir() {
            return Err(Error::model(dir, "is not a directory"));
        }
        let modules: Vec<Module> = read_json(&dir.join("modules.json"))?;
        let modules_path = dir.join("modules.json");
        let Some((first, rest)) = modules.split_first() else {
            return Err(Error::model(&modules_path, "lists no module"));
        };
        if first.kind != "sentence_transformers.models.Transformer" || !first.path.is_empty() {
            return Err(Error::model(
                &modules_path,
                format!(
                    "the first module must be the Transformer in the directory itself, not {} at {:?}",
                    first.kind, first.path
                ),
            ));
        }
        let heads = rest.iter().map(|m| head(dir, m)).collect::<Result<Vec<_>>>()?;

        let config_path = dir.join("config.json");
        let config: serde_json::Value = read_json(&config_path)?;
        let architecture = config.get("model_type").and_then(|v| v.as_str()).unwrap_or("").to_string();
        if !ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(Error::model(
                &config_path,
                format!("model_type {architecture:?} is not supported (supported: {})", ARCHITECTURES.join(", ")),
            ));
        }
        let settings_path = dir.join("config_sentence_transformers.json");
        let settings = read_settings(&settings_path)?;
        if !heads.iter().any(|h| matches!(h, Head::Dense { .. })) {
            return Err(Error::model(
                &modules_path,
                "lists no Dense module: PyLate would add a randomly initialised projection, so no encoder can reproduce this model's vectors",
            ));
        }
        let sbert = dir.join("sentence_bert_config.json");
        let lowercase = if sbert.exists() {
            let v: serde_json::Value = read_json(&sbert)?;
            v.get("do_lower_case").and_then(|v| v.as_bool()).unwrap_or(false)
        } else {
            false
        };
        required(dir.join("model.safetensors"))?;
        required(dir.join("tokenizer.json"))?;
        Ok(Layout { dir: dir.to_path_buf(), architecture, config, heads, settings, lowercase })
    }

    /// The transformer's hidden size.
    pub fn hidden_size(&self) -> Result<usize> {
        self.config
            .get("hidden_size")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| Error::model(self.dir.join("config.json"), "has no hidden_size"))
    }

    /// The dimension of the vectors the pipeline outputs, checked layer by layer.
    pub fn output_dim(&self) -> Result<usize> {
        let mut dim = self.hidden_size()?;
        if dim == 0 {
            return Err(Error::model(self.dir.join("config.json"), "hidden_size is 0"));
        }
        for head in &self.heads {
            if let Head::Dense { dir, in_features, out_features, .. } = head {
                if *out_features == 0 {
                    return Err(Error::model(dir.join("config.json"), "out_features is 0"));
                }
                if *in_features != dim {
                    return Err(Error::model(
                        dir.join("config.json"),
                        format!("in_features is {in_features} but the layer before outputs {dim}"),
                    ));
                }
                dim = *out_features;
            }
        }
        Ok(dim)
    }

    /// Every file whose bytes decide the output vectors, in a fixed order
    /// (the late-interaction settings are compared on their own).
    pub fn weight_files(&self) -> Vec<PathBuf> {
        let mut files =
            ["model.safetensors", "tokenizer.json", "config.json", "modules.json"].map(|f| self.dir.join(f)).to_vec();
        let sbert = self.dir.join("sentence_bert_config.json");
        if sbert.exists() {
            files.push(sbert);
        }
        for head in &self.heads {
            if let Head::Dense { dir, .. } = head {
                files.push(dir.join("model.safetensors"));
                files.push(dir.join("config.json"));
            }
        }
        files
    }
}

/// The late-interaction settings: a key that is absent or `null` takes
/// PyLate's default; a default prompt (prepended text) is refused.
fn read_settings(path: &Path) -> Result<Settings> {
    let mut value: serde_json::Map<String, serde_json::Value> = read_json(path)?;
    value.retain(|_, v| !v.is_null());
    if let Some(prompt) = value.get("default_prompt_name") {
        return Err(Error::model(
            path,
            format!("default_prompt_name {prompt} is not supported (a prompt would be prepended to every text)"),
        ));
    }
    let mut settings: Settings = serde_json::from_value(serde_json::Value::Object(value))
        .map_err(|e| Error::model(path, format!("does not parse: {e}")))?;
    if !settings.do_query_expansion {
        settings.attend_to_expansion_tokens = false;
    }
    if settings.query_length < 3 || settings.document_length < 3 {
        return Err(Error::model(
            path,
            "query_length and document_length must each leave room for [CLS], a prefix and [SEP] (3 or more)",
        ));
    }
    Ok(settings)
}

fn head(dir: &Path, module: &Module) -> Result<Head> {
    match module.kind.as_str() {
        "sentence_transformers.models.Normalize" => Ok(Head::Normalize),
        "pylate.models.Dense.Dense" | "pylate.models.Dense" | "sentence_transformers.models.Dense" => {
            let sub = dir.join(&module.path);
            let config: DenseConfig = read_json(&sub.join("config.json"))?;
            let activation = Activation::parse(&config.activation_function).ok_or_else(|| {
                Error::model(
                    sub.join("config.json"),
                    format!(
                        "activation_function {} is not supported (Identity, Tanh, ReLU, GELU, Sigmoid are)",
                        config.activation_function
                    ),
                )
            })?;
            required(sub.join("model.safetensors"))?;
            Ok(Head::Dense {
                dir: sub,
                in_features: config.in_features,
                out_features: config.out_features,
                bias: config.bias,
                activation,
                residual: config.use_residual,
            })
        }
        other => Err(Error::model(
            dir.join("modules.json"),
            format!("module type {other} is not supported (after the Transformer: Dense and Normalize only)"),
        )),
    }
}

/// What identifies a model's outputs: stored with a collection bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The directory's own name.
    pub name: String,
    /// `bert` or `modernbert`.
    pub architecture: String,
    /// The output vectors' dimension.
    pub dim: usize,
    /// CRC-32 of the files that decide the vectors ([`Layout::weight_files`]:
    /// weights, tokenizer, `config.json`, `modules.json`, the Dense configs),
    /// each with its length, as 8 hex digits: a change of any weight changes it.
    pub checksum: String,
    pub settings: Settings,
}

pub(crate) fn checksum(files: &[PathBuf]) -> Result<String> {
    let mut hasher = crc32fast::Hasher::new();
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| Error::model(file, missing_or(e)))?;
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(format!("{:08x}", hasher.finalize()))
}
