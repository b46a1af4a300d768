//! A tiny random BERT ColBERT model folder, for the tests of the crates that
//! use the encoder (the engine, the server, the CLI): they check what they
//! carry — a binding, a transport, a swap — against this crate's own output.
//! This crate's forward pass is checked against an independent numpy
//! reference in the Python suite (`python/tests/encoder_reference.py`).

use std::path::{Path, PathBuf};

/// The words of the tiny model's vocabulary (any other word is `[UNK]`).
pub const WORDS: &[&str] = &[
    "the",
    "a",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "cat",
    "sat",
    "on",
    "mat",
    "river",
    "bank",
    "money",
    "late",
    "interaction",
    "search",
    "engine",
    "token",
    "vectors",
    "red",
    "planet",
    "mars",
    "python",
    "rust",
];

const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Writes a complete tiny model (BERT, 1 layer, hidden 16, a Dense layer to
/// `dim`, query length 8, document length 12, prefixes `[Q] ` and `[D] `)
/// with weights drawn from `seed` into `dir`; returns `dir`.
pub fn write_tiny_model(dir: &Path, seed: u64, dim: usize) -> std::io::Result<PathBuf> {
    use serde_json::json;
    std::fs::create_dir_all(dir.join("1_Dense"))?;
    let (hidden, inter, positions) = (16usize, 32usize, 32usize);
    let vocab: Vec<&str> = SPECIAL.iter().chain(WORDS).copied().collect();
    let added = ["[Q] ", "[D] "];
    let n_vocab = vocab.len() + added.len();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut normal = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                // xorshift64*, two uniforms summed: a bell shape is enough here.
                let mut u = || {
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
                };
                (u() + u() - 1.0) * 2.0 * scale
            })
            .collect()
    };
    let ones = |n: usize| vec![1.0f32; n];
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![n_vocab, hidden], normal(n_vocab * hidden, 0.5)),
        ("embeddings.position_embeddings.weight".into(), vec![positions, hidden], normal(positions * hidden, 0.5)),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, hidden], normal(2 * hidden, 0.5)),
        ("embeddings.LayerNorm.weight".into(), vec![hidden], ones(hidden)),
        ("embeddings.LayerNorm.bias".into(), vec![hidden], normal(hidden, 0.05)),
    ];
    let pre = "encoder.layer.0.";
    for name in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
        t.push((format!("{pre}{name}.weight"), vec![hidden, hidden], normal(hidden * hidden, 0.2)));
        t.push((format!("{pre}{name}.bias"), vec![hidden], normal(hidden, 0.05)));
    }
    for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
        t.push((format!("{pre}{name}.weight"), vec![hidden], ones(hidden)));
        t.push((format!("{pre}{name}.bias"), vec![hidden], normal(hidden, 0.05)));
    }
    t.push((format!("{pre}intermediate.dense.weight"), vec![inter, hidden], normal(inter * hidden, 0.2)));
    t.push((format!("{pre}intermediate.dense.bias"), vec![inter], normal(inter, 0.05)));
    t.push((format!("{pre}output.dense.weight"), vec![hidden, inter], normal(hidden * inter, 0.2)));
    t.push((format!("{pre}output.dense.bias"), vec![hidden], normal(hidden, 0.05)));
    write_safetensors(&dir.join("model.safetensors"), &t)?;
    let dense = vec![("linear.weight".to_string(), vec![dim, hidden], normal(dim * hidden, 0.25))];
    write_safetensors(&dir.join("1_Dense/model.safetensors"), &dense)?;

    let ids: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, w)| (w.to_string(), json!(i))).collect();
    let mut added_tokens: Vec<serde_json::Value> = SPECIAL
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    for (j, a) in added.iter().enumerate() {
        added_tokens.push(json!({"id": vocab.len() + j, "content": a, "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false}));
    }
    let special = |s: &str| json!({"id": s, "ids": [ids[s]], "tokens": [s]});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added_tokens,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": special("[CLS]"), "[SEP]": special("[SEP]")}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": ids},
    });
    let config = json!({
        "architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": hidden, "intermediate_size": inter,
        "layer_norm_eps": 1e-12, "max_position_embeddings": positions, "model_type": "bert",
        "num_attention_heads": 2, "num_hidden_layers": 1, "pad_token_id": 0,
        "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": n_vocab,
    });
    let st = json!({
        "model_type": "ColBERT", "prompts": {}, "default_prompt_name": null, "similarity_fn_name": "MaxSim",
        "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 8, "document_length": 12,
        "attend_to_expansion_tokens": false, "skiplist_words": [".", ",", "!", "?"], "do_query_expansion": true,
    });
    let modules = json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]);
    let dense_cfg = json!({"in_features": hidden, "out_features": dim, "bias": false,
        "activation_function": "torch.nn.modules.linear.Identity", "use_residual": false});
    let write = |name: &str, v: &serde_json::Value| std::fs::write(dir.join(name), v.to_string());
    write("tokenizer.json", &tokenizer)?;
    write("config.json", &config)?;
    write("config_sentence_transformers.json", &st)?;
    write("sentence_bert_config.json", &json!({"max_seq_length": 11, "do_lower_case": false}))?;
    write("modules.json", &modules)?;
    write("1_Dense/config.json", &dense_cfg)?;
    Ok(dir.to_path_buf())
}

/// A safetensors file of f32 tensors (`name`, shape, values).
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    let mut at = 0usize;
    for (name, shape, values) in tensors {
        let end = at + values.len() * 4;
        header.insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [at, end]}));
        at = end;
    }
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut out = (head.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&head);
    for (_, _, values) in tensors {
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(path, out)
}
