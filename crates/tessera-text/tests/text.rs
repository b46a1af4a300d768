//! Integration tests of tessera-text against independent references: BM25
//! written from first principles, brute-force filtered top-n, a single index
//! over the union of several, and deliberately damaged index directories.

use std::collections::HashMap;
use std::path::Path;

use tessera_text::{Language, Stats, TextError, TextIndex, analyze, bm25_doc, build, build_with_memory};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

const K1: f64 = 1.2;
const B: f64 = 0.75;

/// BM25 from first principles (f64): tantivy's idf, k1 = 1.2, b = 0.75,
/// distinct query terms, document length `len`.
fn reference_bm25(
    doc: &[String],
    len: f64,
    terms: &[String],
    docs: u64,
    tokens: u64,
    df: &HashMap<String, u64>,
) -> f64 {
    let n = docs as f64;
    let avgdl = tokens as f64 / n;
    let mut seen: Vec<&String> = Vec::new();
    let mut score = 0.0;
    for t in terms {
        if seen.contains(&t) {
            continue;
        }
        seen.push(t);
        let tf = doc.iter().filter(|x| *x == t).count() as f64;
        if tf == 0.0 {
            continue;
        }
        let d = df[t] as f64;
        let idf = (1.0 + (n - d + 0.5) / (d + 0.5)).ln();
        score += idf * (K1 + 1.0) * tf / (tf + K1 * (1.0 - B + B * len / avgdl));
    }
    score
}

fn corpus() -> Vec<(u32, String)> {
    [
        "The quick brown fox jumps over the lazy dog",
        "A fox is quick; foxes are quicker than dogs.",
        "Dogs sleep all day long",
        "Running runs ran: the runner keeps running",
        "Brown bread and brown butter",
        "!!!",
        "lazy lazy lazy afternoon",
        "Nothing to see here",
        "the fox, the dog, and the brown cow",
        "quick quick quick quick quick fox",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| (i as u32 * 3 + 7, t.to_string())) // rows need not be dense
    .collect()
}

fn build_index(dir: &Path, lang: Language, docs: &[(u32, String)]) -> TextIndex {
    build(dir, lang, docs.iter().cloned()).unwrap();
    TextIndex::open(dir, lang).unwrap()
}

fn all(_: u32) -> bool {
    true
}

#[test]
fn analyze_english_stems_plain_does_not() {
    let en = analyze(Language::English, "Running runs");
    assert_eq!(en.len(), 2);
    assert_eq!(en[0], en[1], "{en:?}");
    assert_eq!(en[0], "run");
    assert_eq!(analyze(Language::Plain, "Running runs"), s(&["running", "runs"]));
    assert_eq!(analyze(Language::English, "Hello, WORLD!"), s(&["hello", "world"]));
    // Tokens longer than 40 bytes are dropped, as in tantivy's default chains.
    let long = "x".repeat(41);
    assert_eq!(analyze(Language::Plain, &format!("a {long} b")), s(&["a", "b"]));
    assert!(analyze(Language::English, " ... ").is_empty());
}

#[test]
fn analyze_cjk_ngrams() {
    assert_eq!(analyze(Language::Cjk, "東京都"), s(&["東", "東京", "京", "京都", "都"]));
    assert_eq!(analyze(Language::Cjk, "京"), s(&["京"]));
    // Mixed text: latin words stay whole (lowercased), CJK runs are n-grammed.
    assert_eq!(analyze(Language::Cjk, "Tokyo東京, OK"), s(&["tokyo", "東", "東京", "京", "ok"]));
    assert_eq!(analyze(Language::Cjk, "カタカナ"), s(&["カ", "カタ", "タ", "タカ", "カ", "カナ", "ナ"]));
}

#[test]
fn scores_match_first_principles_bm25() {
    let dir = tempfile::tempdir().unwrap();
    let docs = corpus();
    let index = build_index(dir.path(), Language::English, &docs);
    assert_eq!(index.num_segments(), 1);
    let analyzed: Vec<Vec<String>> = docs.iter().map(|(_, t)| analyze(Language::English, t)).collect();

    for query in ["quick fox", "lazy dog", "brown", "running", "fox fox quick", "zebra"] {
        let terms = analyze(Language::English, query);
        let stats = index.stats(&terms);
        // Independent statistics from the analyzed corpus.
        let expect = Stats::of_docs(analyzed.iter().map(|d| d.as_slice()), &terms);
        assert_eq!(stats, expect, "{query}");
        assert_eq!(stats.docs, docs.len() as u64);

        let hits = index.search(&terms, 100, &stats, &all);
        let mut reference: Vec<(u32, f64)> = docs
            .iter()
            .zip(&analyzed)
            .map(|((row, _), toks)| {
                (*row, reference_bm25(toks, toks.len() as f64, &terms, stats.docs, stats.tokens, &stats.doc_freq))
            })
            .filter(|(_, sc)| *sc > 0.0)
            .collect();
        reference.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(hits.len(), reference.len(), "{query}: {hits:?} vs {reference:?}");
        for ((row, score), (rrow, rscore)) in hits.iter().zip(&reference) {
            // All documents are ≤ 40 tokens, where tantivy's field norms are
            // exact, so only f32 rounding separates the two.
            assert!((*score as f64 - rscore).abs() < 1e-5 * rscore.max(1.0), "{query}: {score} vs {rscore}");
            assert_eq!(row, rrow, "{query}");
            // The memtable scorer agrees with the index on the same document.
            let i = docs.iter().position(|(r, _)| r == row).unwrap();
            let mem = bm25_doc(&analyzed[i], &terms, &stats);
            assert!((mem - score).abs() <= 1e-6 * score.max(1.0), "{query}: memtable {mem} vs index {score}");
        }
    }
}

#[test]
fn long_documents_use_tantivys_quantized_length() {
    use tantivy::fieldnorm::FieldNormReader;
    let dir = tempfile::tempdir().unwrap();
    let filler = |n: usize| (0..n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    let docs: Vec<(u32, String)> = vec![
        (0, format!("needle {}", filler(99))), // 100 tokens
        (1, format!("needle needle {}", filler(1000))),
        (2, "needle in a short haystack".to_string()),
    ];
    let index = build_index(dir.path(), Language::Plain, &docs);
    let terms = s(&["needle"]);
    let stats = index.stats(&terms);
    let hits = index.search(&terms, 10, &stats, &all);
    assert_eq!(hits.len(), 3);
    for (row, score) in hits {
        let toks = analyze(Language::Plain, &docs[row as usize].1);
        let quantized = FieldNormReader::id_to_fieldnorm(FieldNormReader::fieldnorm_to_id(toks.len() as u32));
        assert!(quantized as usize <= toks.len() && quantized as f64 >= 0.85 * toks.len() as f64);
        let reference = reference_bm25(&toks, quantized as f64, &terms, stats.docs, stats.tokens, &stats.doc_freq);
        assert!((score as f64 - reference).abs() < 1e-5, "row {row}: {score} vs {reference}");
        let mem = bm25_doc(&toks, &terms, &stats);
        assert_eq!(mem, score, "row {row}: memtable and index must agree exactly");
    }
}

#[test]
fn summed_stats_over_two_indexes_equal_one_index_over_the_union() {
    let docs = corpus();
    let (a_docs, b_docs) = docs.split_at(4);
    let (da, db, du) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = build_index(da.path(), Language::English, a_docs);
    let b = build_index(db.path(), Language::English, b_docs);
    let u = build_index(du.path(), Language::English, &docs);
    // A "memtable" document, scored in memory, present in none of the indexes.
    let mem_text = "a quick brown dog and a lazy fox";
    let mem_tokens = analyze(Language::English, mem_text);
    let mut all_docs = docs.clone();
    all_docs.push((999, mem_text.to_string()));
    let dm = tempfile::tempdir().unwrap();
    let u_mem = build_index(dm.path(), Language::English, &all_docs);

    for query in ["quick fox", "lazy brown dogs", "the", "run"] {
        let terms = analyze(Language::English, query);
        let mut global = a.stats(&terms);
        global.add(&b.stats(&terms));
        assert_eq!(global, u.stats(&terms));
        let mut merged: Vec<(u32, f32)> = a.search(&terms, 100, &global, &all);
        merged.extend(b.search(&terms, 100, &global, &all));
        merged.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        let single = u.search(&terms, 100, &global, &all);
        assert_eq!(merged.len(), single.len(), "{query}");
        for (m, s1) in merged.iter().zip(&single) {
            assert_eq!(m.0, s1.0, "{query}");
            assert!((m.1 - s1.1).abs() <= 1e-6 * s1.1.max(1.0), "{query}: {m:?} vs {s1:?}");
        }

        // Now with the memtable document in the global statistics.
        global.add(&Stats::of_docs([mem_tokens.as_slice()], &terms));
        assert_eq!(global, u_mem.stats(&terms));
        let mut merged: Vec<(u32, f32)> = a.search(&terms, 100, &global, &all);
        merged.extend(b.search(&terms, 100, &global, &all));
        let mem_score = bm25_doc(&mem_tokens, &terms, &global);
        if mem_score > 0.0 {
            merged.push((999, mem_score));
        }
        merged.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        let single = u_mem.search(&terms, 100, &global, &all);
        assert_eq!(merged.len(), single.len(), "{query}");
        for (m, s1) in merged.iter().zip(&single) {
            assert_eq!(m.0, s1.0, "{query}");
            assert!((m.1 - s1.1).abs() <= 1e-6 * s1.1.max(1.0), "{query}: {m:?} vs {s1:?}");
        }
    }
}

#[test]
fn accept_filters_inside_collection() {
    // Enough documents for several 128-document posting blocks, so
    // block-max WAND pruning is exercised.
    let docs: Vec<(u32, String)> = (0..3000u32)
        .map(|i| {
            let pad = (0..(i * 7919 % 23)).map(|_| "pad").collect::<Vec<_>>().join(" ");
            let extra = if i % 5 == 0 { " beta" } else { "" };
            (i, format!("alpha {pad}{extra} {}", if i % 3 == 0 { "alpha" } else { "" }))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let index = build_index(dir.path(), Language::Plain, &docs);
    let terms = s(&["alpha", "beta"]);
    let stats = index.stats(&terms);
    let odd_rejected = |row: u32| row.is_multiple_of(2);
    for n in [1, 10, 100, 1500, 5000] {
        let hits = index.search(&terms, n, &stats, &odd_rejected);
        assert_eq!(hits.len(), n.min(1500), "n = {n}");
        assert!(hits.iter().all(|(r, _)| r.is_multiple_of(2)));
        // Brute force over the accepted documents with the memtable scorer.
        let mut brute: Vec<(u32, f32)> = docs
            .iter()
            .filter(|(r, _)| odd_rejected(*r))
            .map(|(r, t)| (*r, bm25_doc(&analyze(Language::Plain, t), &terms, &stats)))
            .collect();
        brute.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        for (i, (hit, want)) in hits.iter().zip(&brute).enumerate() {
            assert!((hit.1 - want.1).abs() <= 1e-5, "n = {n}, rank {i}: {hit:?} vs {want:?}");
        }
        // Best first.
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
    }
    // Rejecting everything returns nothing; n = 0 returns nothing.
    assert!(index.search(&terms, 10, &stats, &|_| false).is_empty());
    assert!(index.search(&terms, 0, &stats, &all).is_empty());
}

#[test]
fn multi_segment_build_is_merged_into_one() {
    // The 15 MB minimum budget overflows with this many distinct terms.
    let docs = (0..60_000u32).map(|i| (i, format!("t{i} u{} common", i * 31 % 100_003)));
    let dir = tempfile::tempdir().unwrap();
    build_with_memory(dir.path(), Language::Plain, docs, 0).unwrap();
    let index = TextIndex::open(dir.path(), Language::Plain).unwrap();
    assert_eq!(index.num_segments(), 1);
    let terms = s(&["common", "t123"]);
    let stats = index.stats(&terms);
    assert_eq!(stats.docs, 60_000);
    assert_eq!(stats.doc_freq["common"], 60_000);
    assert_eq!(index.search(&terms, 1, &stats, &all)[0].0, 123);
}

#[test]
fn cjk_index_finds_substrings() {
    let dir = tempfile::tempdir().unwrap();
    let docs =
        vec![(0, "東京都に住んでいます".to_string()), (1, "京都は古い都です".to_string()), (2, "大阪".to_string())];
    let index = build_index(dir.path(), Language::Cjk, &docs);
    let terms = analyze(Language::Cjk, "京都");
    let hits = index.search(&terms, 10, &index.stats(&terms), &all);
    let rows: Vec<u32> = hits.iter().map(|h| h.0).collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.contains(&0) && rows.contains(&1));
    // Default stats mean "this index's own".
    assert_eq!(index.search(&terms, 10, &Stats::default(), &all), hits);
}

#[test]
fn empty_index_and_non_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let index = build_index(dir.path(), Language::English, &[]);
    let terms = s(&["x"]);
    let stats = index.stats(&terms);
    assert_eq!((stats.docs, stats.tokens), (0, 0));
    assert!(index.search(&terms, 5, &stats, &all).is_empty());
    // A second build into the same (now non-empty) directory is refused.
    assert!(build(dir.path(), Language::English, std::iter::empty()).is_err());
}

fn index_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn damaged_indexes_are_refused_without_panicking() {
    let docs = corpus();
    let template = tempfile::tempdir().unwrap();
    build(template.path(), Language::English, docs.iter().cloned()).unwrap();
    let names: Vec<String> =
        index_files(template.path()).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n == "meta.json"), "{names:?}");

    let fresh = || {
        let d = tempfile::tempdir().unwrap();
        for n in &names {
            std::fs::copy(template.path().join(n), d.path().join(n)).unwrap();
        }
        d
    };
    let terms = analyze(Language::English, "quick fox");
    let check = |d: &Path, what: &str| match TextIndex::open(d, Language::English) {
        Err(e) => {
            assert!(matches!(e, TextError::Corrupted(_)), "{what}: {e}");
        }
        Ok(index) => {
            // Only acceptable if nothing that matters was damaged.
            let r = index.try_search(&terms, 10, &index.stats(&terms), &all);
            panic!("{what}: damaged index opened; search gave {r:?}");
        }
    };
    let mut damaged = 0;
    for n in &names {
        if n.starts_with('.') || n == ".managed.json" {
            continue; // lock / bookkeeping files
        }
        let d = fresh();
        std::fs::remove_file(d.path().join(n)).unwrap();
        check(d.path(), &format!("deleted {n}"));

        let d = fresh();
        let len = std::fs::metadata(d.path().join(n)).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(d.path().join(n)).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);
        check(d.path(), &format!("truncated {n}"));

        if n != "meta.json" && len > 0 {
            let d = fresh();
            let p = d.path().join(n);
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 3;
            bytes[mid] ^= 0x5a;
            std::fs::write(&p, bytes).unwrap();
            check(d.path(), &format!("flipped a byte in {n}"));
        }
        damaged += 1;
    }
    assert!(damaged >= 4, "{names:?}");

    // The wrong language is refused too; the intact copy opens.
    let d = fresh();
    assert!(matches!(TextIndex::open(d.path(), Language::Cjk), Err(TextError::Corrupted(_))));
    assert!(TextIndex::open(d.path(), Language::English).is_ok());
    assert!(TextIndex::open(&d.path().join("nope"), Language::English).is_err());
}
