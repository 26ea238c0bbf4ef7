//! The bulk load of the audience index from packed storage columns (1,000,000 contacts by
//! default), for profiling: `cargo build --release -p mailcore-engine --example bulk_build`,
//! then e.g. `valgrind --tool=callgrind target/release/examples/bulk_build 1000000`
//! (`... 1000000 gen` only generates the input, to subtract).

#[path = "../benches/common/mod.rs"]
mod common;

use mailcore_engine::AudienceIndex;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let (ids, statuses, tags) = common::packed_columns(n);
    if std::env::args().nth(2).as_deref() == Some("gen") {
        println!(
            "generated {} bytes",
            ids.len() + statuses.len() + tags.len()
        );
        return;
    }
    let start = std::time::Instant::now();
    let mut index = AudienceIndex::new();
    index
        .upsert_packed(&ids, &statuses, &tags)
        .expect("valid columns");
    println!(
        "{} contacts, {} tags in {:.3} s",
        index.len(),
        index.tags().len(),
        start.elapsed().as_secs_f64()
    );
}
