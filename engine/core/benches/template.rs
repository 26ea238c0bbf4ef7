//! Merge-tag template rendering of the ~20 KB newsletter body (HTML escaping on):
//! `cargo bench -p mailcore-engine --bench template`.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mailcore_engine::Template;

fn bench(c: &mut Criterion) {
    let html = common::newsletter_html();
    let template = Template::compile(&html).expect("valid template");
    let recipients = common::Recipients::new(template.field_paths(), 1);
    let values = recipients.values();
    let rendered = template.render(&values[0], true);
    assert!(
        rendered.len() >= html.len() - 200,
        "rendered {} bytes",
        rendered.len()
    );
    println!(
        "template: {} bytes, {} fields",
        html.len(),
        template.fields().len()
    );
    let mut group = c.benchmark_group("template");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(html.len() as u64));
    group.bench_function("compile_20kb", |b| {
        b.iter(|| Template::compile(std::hint::black_box(&html)))
    });
    group.bench_function("render_20kb_html", |b| {
        b.iter(|| template.render(std::hint::black_box(&values[0]), true))
    });
    let mut out = String::with_capacity(2 * html.len());
    group.bench_function("render_into_20kb_html", |b| {
        b.iter(|| {
            out.clear();
            template.render_into(&mut out, std::hint::black_box(&values[0]), true);
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
