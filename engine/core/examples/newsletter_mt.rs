#[path = "../benches/common/mod.rs"]
mod common;
use mailcore_engine::{MessageRenderer, RenderPlan};
use std::time::Instant;
fn main() {
    let html = common::newsletter_html();
    let renderer = MessageRenderer::new(&common::spec(&html)).expect("valid spec");
    let owned = common::Recipients::new(renderer.fields(), 1_000);
    let values = owned.values();
    let recipients = owned.recipients(&values);
    let mut plans: Vec<RenderPlan> = Vec::new();
    let mut pool: Vec<Vec<u8>> = (0..1000).map(|_| vec![0u8; 48 * 1024]).collect();
    for round in 0..6 {
        let threads = 1 + round % 2;
        let t = Instant::now();
        for _ in 0..20 {
            renderer.plan_batch(&recipients, common::DATE, None, threads, &mut plans).unwrap();
            let per = 1000usize.div_ceil(threads);
            std::thread::scope(|s| {
                for (ps, outs) in plans.chunks(per).zip(pool.chunks_mut(per)) {
                    let r = &renderer;
                    s.spawn(move || for (p, o) in ps.iter().zip(outs.iter_mut()) { r.write_plan(p, &mut o[..p.len()]); });
                }
            });
        }
        println!("threads {threads}: {:.0} msg/s", 20_000.0 / t.elapsed().as_secs_f64());
    }
}
