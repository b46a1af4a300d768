//! The build pool (background seals and merges) is the process's: its size
//! is set before the first background seal and refused after, unless it is
//! the size the pool runs on. A test binary of its own, as the pool is
//! process-wide.

use tessera::{CollectionConfig, Database, Document, Tokens, set_build_threads};

#[test]
fn build_threads_are_set_before_the_first_background_seal() {
    assert!(set_build_threads(0).is_err(), "0 threads is refused");
    set_build_threads(3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let config = CollectionConfig { memtable_bytes: 4096, index: None, ..CollectionConfig::new(4) };
    let c = db.create_collection("c", config).unwrap();
    for i in 0..64 {
        let tokens = Tokens::from_rows(&[[1.0, 0.0, 0.0, 0.0]; 16]).unwrap();
        c.upsert(&[Document::new(format!("d{i}"), tokens)]).unwrap();
    }
    c.flush().unwrap();
    assert!(c.stats().segments > 0, "the documents were sealed");
    let refused = set_build_threads(2).unwrap_err().to_string();
    assert!(refused.contains("already runs on 3 threads"), "{refused}");
    set_build_threads(3).unwrap();
    assert_eq!(c.len(), 64, "every document is there");
}
