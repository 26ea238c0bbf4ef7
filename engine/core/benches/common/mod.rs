//! Workloads shared by the benches; they mirror `benchmarks/engine.py`.
#![allow(dead_code)] // each bench uses part of this module

use mailcore_engine::{AudienceIndex, MessageSpec, Recipient, Tracking};

pub const DATE: &str = "Tue, 07 Jan 2025 10:00:00 +0000";
pub const TRACKING_BASE: &str = "https://t.acme-news.example";
pub const SUBJECT: &str = "{{ firstName }}, the winter issue is here";
pub const PREHEADER: &str = "Ten stories picked for you this month";
const SLUGS: [&str; 10] = [
    "product-roadmap",
    "customer-story-globex",
    "winter-webinar",
    "pricing-update",
    "api-v2-launch",
    "security-report",
    "team-spotlight",
    "events-near-you",
    "tips-and-tricks",
    "community-forum",
];
const LOREM: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
    tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud \
    exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure \
    dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. ";

fn build(body_len: usize) -> String {
    let mut html = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Acme News</title>\
         <style>body{margin:0;padding:0;background:#f4f4f4}a{color:#0b6bcb}</style></head><body>\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" \
         style=\"max-width:640px;margin:0 auto;background:#ffffff\">\n<tr><td style=\"padding:24px;\
         font-family:Arial,Helvetica,sans-serif\"><p>Hi {{ firstName }} {{ lastName }},</p><p>Here \
         is what is new for {{ customFields.plan }} members in {{ customFields.city }} this \
         month.</p></td></tr>\n",
    );
    let body: String = LOREM.chars().cycle().take(body_len).collect();
    for slug in SLUGS {
        html.push_str(&format!(
            "<tr><td style=\"padding:16px 24px;font-family:Arial,Helvetica,sans-serif;\
             font-size:15px;line-height:22px;color:#333333\"><h2 style=\"margin:0 0 8px;\
             font-size:20px;color:#111111\">{}</h2><p>{}.</p><p><a href=\"https://www.acme-news.\
             example/2025/01/{slug}\" style=\"color:#0b6bcb;text-decoration:underline\">Read the \
             full story &rarr;</a></p></td></tr>\n",
            slug.replace('-', " "),
            body.trim_end(),
        ));
    }
    html.push_str(
        "<tr><td style=\"padding:24px;font-size:12px;color:#777777\"><p>This email was sent to \
         {{ email }}. Acme News, 1 Main St, Springfield.</p></td></tr>\n</table></body></html>",
    );
    html
}

/// The ~20 KB newsletter: 5 merge fields, 10 distinct links.
pub fn newsletter_html() -> String {
    let skeleton = build(0).len();
    build(20_000usize.saturating_sub(skeleton) / SLUGS.len())
}

/// The campaign: open and click tracking on, the text part derived from the HTML.
pub fn spec(html: &str) -> MessageSpec<'_> {
    MessageSpec {
        subject: SUBJECT,
        preheader: PREHEADER,
        html,
        text: None,
        from_email: "news@acme-news.example",
        from_name: Some("Acme News"),
        reply_to: Some("help@acme-news.example"),
        headers: &[("X-Mailcore-Campaign", "cmp_bench")],
        tracking: Tracking {
            opens: true,
            clicks: true,
            base: TRACKING_BASE,
        },
    }
}

/// Per-recipient strings of `n` recipients, owned.
pub struct Recipients {
    values: Vec<Vec<String>>,
    message_ids: Vec<String>,
    unsubscribe_urls: Vec<String>,
    tokens: Vec<String>,
}

const FIRST: [&str; 4] = ["Sarah", "Léna", "Zoë", "Frédéric"];
const CITIES: [&str; 4] = ["Montréal", "Berlin", "São Paulo", "Zürich"];

impl Recipients {
    /// Values positionally matching `fields` (the renderer's or template's field paths).
    pub fn new(fields: &[String], n: usize) -> Self {
        let values = (0..n)
            .map(|i| {
                fields
                    .iter()
                    .map(|f| match f.as_str() {
                        "email" => format!("user{i}@example.com"),
                        "firstName" => FIRST[i % FIRST.len()].to_owned(),
                        "lastName" => "O'Brien".to_owned(),
                        "customFields.plan" => "pro".to_owned(),
                        _ => CITIES[i % CITIES.len()].to_owned(),
                    })
                    .collect()
            })
            .collect();
        Recipients {
            values,
            message_ids: (0..n)
                .map(|i| format!("cmp_bench.{i}@acme-news.example"))
                .collect(),
            unsubscribe_urls: (0..n)
                .map(|i| format!("https://acme-news.example/u/v1.{i:012x}.Zm9vYmFyYmF6cXV4"))
                .collect(),
            tokens: (0..n)
                .map(|i| format!("v1-{i:012x}-AbCdEfGhIjKlMnOpQrStUvWx"))
                .collect(),
        }
    }

    /// Positional values (`Some` for every field).
    pub fn values(&self) -> Vec<Vec<Option<&str>>> {
        self.values
            .iter()
            .map(|v| v.iter().map(|s| Some(s.as_str())).collect())
            .collect()
    }

    /// Borrowed recipients over `values` (from [`Recipients::values`]).
    pub fn recipients<'a>(&'a self, values: &'a [Vec<Option<&'a str>>]) -> Vec<Recipient<'a>> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Recipient {
                values: v,
                message_id: &self.message_ids[i],
                unsubscribe_url: &self.unsubscribe_urls[i],
                tracking_token: Some(&self.tokens[i]),
            })
            .collect()
    }
}

/// splitmix64: a tiny deterministic generator (no `rand` dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Tag names `tag00`..`tag49`.
pub fn tag(i: usize) -> String {
    format!("tag{i:02}")
}

/// The columns of `n` contacts (as [`audience`] draws them) packed as SQLite's
/// `group_concat` returns them: ids and statuses comma-separated, tag arrays one per line.
pub fn packed_columns(n: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let names: Vec<String> = (0..50).map(tag).collect();
    let mut rng = Rng(11);
    let (mut ids, mut statuses, mut tags) = (Vec::new(), Vec::new(), Vec::new());
    for id in 1..=n {
        if id > 1 {
            ids.push(b',');
            statuses.push(b',');
            tags.push(b'\n');
        }
        ids.extend_from_slice(id.to_string().as_bytes());
        let status = match rng.below(100) {
            0..=89 => 0,
            90..=95 => 1,
            96..=98 => 2,
            _ => 3,
        };
        statuses.extend_from_slice(status.to_string().as_bytes());
        let k = rng.below(6) as usize;
        let mut picked: Vec<&str> = Vec::with_capacity(k);
        while picked.len() < k {
            let t = names[rng.below(50) as usize].as_str();
            if !picked.contains(&t) {
                picked.push(t);
            }
        }
        tags.push(b'[');
        for (j, t) in picked.iter().enumerate() {
            if j > 0 {
                tags.push(b',');
            }
            tags.extend_from_slice(format!("\"{t}\"").as_bytes());
        }
        tags.push(b']');
    }
    (ids, statuses, tags)
}

/// `n` contacts (ids 1..=n), 50 tags, each contact 0-5 distinct random tags, ~90 %
/// subscribed (status 0), upserted in batches of 100,000.
pub fn audience(n: u32) -> AudienceIndex {
    let names: Vec<String> = (0..50).map(tag).collect();
    let mut rng = Rng(11);
    let mut index = AudienceIndex::new();
    let mut start = 1u32;
    while start <= n {
        let end = n.min(start.saturating_add(99_999));
        let ids: Vec<u32> = (start..=end).collect();
        let statuses: Vec<u8> = ids
            .iter()
            .map(|_| match rng.below(100) {
                0..=89 => 0,
                90..=95 => 1,
                96..=98 => 2,
                _ => 3,
            })
            .collect();
        let tags: Vec<Vec<&str>> = ids
            .iter()
            .map(|_| {
                let k = rng.below(6) as usize;
                let mut picked: Vec<&str> = Vec::with_capacity(k);
                while picked.len() < k {
                    let t = names[rng.below(50) as usize].as_str();
                    if !picked.contains(&t) {
                        picked.push(t);
                    }
                }
                picked
            })
            .collect();
        index
            .upsert_many(&ids, &statuses, &tags)
            .expect("batch lengths match");
        start = end + 1;
    }
    index
}
