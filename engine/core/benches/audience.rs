//! Audience index at 1,000,000 contacts (50 tags, 0-5 per contact, ~90 % subscribed):
//! `count` and `query` (members) for any-of, all-of and none-of two tags among subscribed
//! contacts; and the bulk load of those 1,000,000 contacts from packed storage columns
//! (`upsert_packed`, as the store's first load hands them over).
//! `cargo bench -p mailcore-engine --bench audience`.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mailcore_engine::{AudienceIndex, Query};

fn bench(c: &mut Criterion) {
    let index = common::audience(1_000_000);
    let two = |a: usize, b: usize| vec![common::tag(a), common::tag(b)];
    let subscribed = Some(vec![0]);
    let queries = [
        (
            "any_of",
            Query {
                any_tags: two(0, 1),
                statuses: subscribed.clone(),
                ..Query::default()
            },
        ),
        (
            "all_of",
            Query {
                all_tags: two(2, 3),
                statuses: subscribed.clone(),
                ..Query::default()
            },
        ),
        (
            "none_of",
            Query {
                none_tags: two(4, 5),
                statuses: subscribed,
                ..Query::default()
            },
        ),
    ];
    let mut group = c.benchmark_group("audience_1m");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (name, q) in &queries {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("count_{name}"), |b| {
            b.iter(|| index.count(std::hint::black_box(q)))
        });
        // Members as the binding hands them over: the bitmap, then its ids as u32.
        group.throughput(Throughput::Elements(index.count(q)));
        group.bench_function(format!("members_{name}"), |b| {
            b.iter(|| {
                let ids: Vec<u32> = index.query(std::hint::black_box(q)).iter().collect();
                ids
            })
        });
    }
    group.finish();

    let (ids, statuses, tags) = common::packed_columns(1_000_000);
    let mut group = c.benchmark_group("audience_bulk_1m");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("upsert_packed", |b| {
        b.iter(|| {
            let mut index = AudienceIndex::new();
            index
                .upsert_packed(&ids, &statuses, &tags)
                .expect("valid columns");
            index
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
