//! HTML with links through click (and open) tracking: instrumentation never panics, and the
//! link table holds absolute http(s) URLs without control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcore_engine::tracking::{instrument, Tracking};
use mailcore_engine::Template;

fuzz_target!(|data: &[u8]| {
    let (opens, html) = match data.split_first() {
        Some((b, rest)) => (b & 1 == 1, String::from_utf8_lossy(rest)),
        None => (false, String::from_utf8_lossy(data)),
    };
    let Ok(template) = Template::compile(&html) else {
        return;
    };
    let tracking = Tracking {
        opens,
        clicks: true,
        base: "https://t.example.com/t",
    };
    let (instrumented, links) = instrument(&template, &tracking);
    for (i, url) in links.iter().enumerate() {
        assert!(
            !url.chars().any(char::is_control),
            "control character in link {url:?}"
        );
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        assert!(
            lower.starts_with("http://") || lower.starts_with("https://"),
            "not an absolute http(s) URL: {url:?}"
        );
        assert!(
            !url.starts_with("https://t.example.com/t/"),
            "own endpoint tracked: {url:?}"
        );
        assert!(!links[..i].contains(url), "duplicate link {url:?}");
    }
    let values = vec![Some("v<&>\"'"); instrumented.field_paths().len()];
    let mut out = String::new();
    instrumented.render_into_indexed_with_token(
        &mut out,
        &values,
        &(0..values.len()).collect::<Vec<_>>(),
        true,
        "tok",
    );
});
