//! Complete MIME messages of the ~20 KB newsletter (open + click tracking on):
//! `cargo bench -p mailcore-engine --bench mime`.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mailcore_engine::MessageRenderer;

const BATCH: usize = 1_000;

fn bench(c: &mut Criterion) {
    let html = common::newsletter_html();
    let renderer = MessageRenderer::new(&common::spec(&html)).expect("valid spec");
    let owned = common::Recipients::new(renderer.fields(), BATCH);
    let values = owned.values();
    let recipients = owned.recipients(&values);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    let mut group = c.benchmark_group("mime");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("render_one", |b| {
        b.iter(|| renderer.render(std::hint::black_box(&recipients[0]), common::DATE))
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("render_batch_1000_one_thread", |b| {
        b.iter(|| renderer.render_batch_with_threads(&recipients, common::DATE, 1))
    });
    group.bench_function(format!("render_batch_1000_{cores}_threads"), |b| {
        b.iter(|| renderer.render_batch(&recipients, common::DATE))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
