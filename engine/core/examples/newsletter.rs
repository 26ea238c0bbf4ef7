//! The criterion `mime` workload (the ~20 KB newsletter, tracking on) rendered on one
//! thread, for profiling: `cargo build --release -p mailcore-engine --example newsletter`,
//! then e.g. `valgrind --tool=callgrind target/release/examples/newsletter 2000`.

#[path = "../benches/common/mod.rs"]
mod common;

use mailcore_engine::{MessageRenderer, RenderPlan};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000);
    let html = common::newsletter_html();
    let renderer = MessageRenderer::new(&common::spec(&html)).expect("valid spec");
    let owned = common::Recipients::new(renderer.fields(), 1_000);
    let values = owned.values();
    let recipients = owned.recipients(&values);
    let mut plans: Vec<RenderPlan> = Vec::new();
    let mut out = vec![0u8; 64 * 1024];
    let mut bytes = 0;
    for round in 0..n.div_ceil(recipients.len()) {
        let batch = &recipients[..recipients.len().min(n - round * recipients.len())];
        renderer
            .plan_batch(batch, common::DATE, None, 1, &mut plans)
            .expect("render");
        for plan in &plans {
            renderer.write_plan(plan, &mut out[..plan.len()]);
            bytes += plan.len();
        }
    }
    println!("{n} messages, {} bytes each", bytes / n);
}
