//! Quick throughput check of `MessageRenderer`:
//! `cargo run --release -p mailcore-engine --example mime_bench [messages] [track]`
//! (`track` turns on open and click tracking).

use std::time::Instant;

use mailcore_engine::{MessageRenderer, MessageSpec, Recipient, Tracking};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let track = std::env::args().nth(2).is_some_and(|a| a == "track");
    let para = "<tr><td style=\"padding:12px;font-family:Arial,sans-serif;font-size:15px\">\
        <p>Hi {{ firstName | default: \"there\" }}, your <b>{{ customFields.plan }}</b> plan \
        renews soon. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
        tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam.</p>\
        <p><a href=\"https://acme.com/offer?c={{ customFields.city }}&amp;e={{ email }}\">\
        See offers in {{ customFields.city }}</a> or <a href=\"https://acme.com/all?p=1&amp;s=2\">\
        all offers</a></p></td></tr>\n";
    let mut html = String::from(
        "<!DOCTYPE html><html><head><style>body{margin:0}</style></head><body>\
         <table width=\"100%\">\n",
    );
    while html.len() < 20_000 {
        html.push_str(para);
    }
    html.push_str("</table><p>{{ firstName }} {{ lastName }}</p></body></html>");
    let renderer = MessageRenderer::new(&MessageSpec {
        subject: "{{ firstName }}, your {{ customFields.plan }} plan",
        preheader: "News for {{ customFields.city }}",
        html: &html,
        text: None,
        from_email: "news@acme.com",
        from_name: Some("Acme News"),
        reply_to: Some("help@acme.com"),
        headers: &[("X-Mailcore-Campaign", "cmp_x")],
        tracking: Tracking {
            opens: track,
            clicks: track,
            base: "https://t.acme.com",
        },
    })
    .expect("valid spec");
    let fields = renderer.fields().to_vec();
    let owned: Vec<Vec<String>> = (0..n)
        .map(|i| {
            fields
                .iter()
                .map(|f| match f.as_str() {
                    "email" => format!("user{i}@example.com"),
                    "firstName" => format!("Frédéric{i}"),
                    "lastName" => "Dupont".into(),
                    "customFields.plan" => "Pro".into(),
                    _ => "Montréal".into(),
                })
                .collect()
        })
        .collect();
    let values: Vec<Vec<Option<&str>>> = owned
        .iter()
        .map(|v| v.iter().map(|s| Some(s.as_str())).collect())
        .collect();
    let ids: Vec<String> = (0..n)
        .map(|i| format!("cmp_x.con_{i}@mail.example"))
        .collect();
    let urls: Vec<String> = (0..n)
        .map(|i| format!("https://acme.com/u/{i:08x}"))
        .collect();
    let recipients: Vec<Recipient<'_>> = (0..n)
        .map(|i| Recipient {
            values: &values[i],
            message_id: &ids[i],
            unsubscribe_url: &urls[i],
            tracking_token: track.then_some("AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_"),
        })
        .collect();
    let date = "Tue, 07 Jan 2025 10:00:00 +0000";
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "html template: {} bytes, {n} messages, tracking {track}",
        html.len()
    );
    for threads in [1, cores] {
        // Chunks of 1024 whose output is dropped: compute scaling without page-fault noise.
        let start = Instant::now();
        for chunk in recipients.chunks(1024) {
            let out = renderer
                .render_batch_with_threads(chunk, date, threads)
                .expect("render");
            std::hint::black_box(out);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "chunks of 1024, output dropped, threads {threads}: {:.0} msg/s",
            n as f64 / secs
        );
    }
    for round in 0..2 {
        for threads in [1, cores] {
            let start = Instant::now();
            let out = renderer
                .render_batch_with_threads(&recipients, date, threads)
                .expect("render");
            let secs = start.elapsed().as_secs_f64();
            let bytes: usize = out.iter().map(Vec::len).sum();
            println!(
                "round {round} threads {threads}: {:.0} msg/s, {:.0} MB/s out ({} bytes/msg)",
                n as f64 / secs,
                bytes as f64 / secs / 1e6,
                bytes / n
            );
        }
    }
}
