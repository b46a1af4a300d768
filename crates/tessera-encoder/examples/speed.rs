//! Throughput probe: `speed MODEL_DIR TEXTS.jsonl [N]`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let enc = tessera_encoder::Encoder::open(std::path::Path::new(&args[1])).unwrap();
    let n: usize = args.get(3).map_or(200, |s| s.parse().unwrap());
    let texts: Vec<String> = std::fs::read_to_string(&args[2])
        .unwrap()
        .lines()
        .take(n)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    let t = std::time::Instant::now();
    let out = enc.encode(&texts, tessera_encoder::Kind::Document).unwrap();
    let s = t.elapsed().as_secs_f64();
    let toks: usize = out.iter().map(|e| e.len()).sum();
    println!(
        "{} docs {} tokens in {:.2}s: {:.0} docs/s {:.0} tokens/s",
        texts.len(),
        toks,
        s,
        texts.len() as f64 / s,
        toks as f64 / s
    );
}
