//! Arbitrary text through `Template::compile`; compiled templates are rendered with a fixed
//! value map, HTML-escaped and not. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcore_engine::Template;

fn lookup(path: &str) -> Option<&'static str> {
    match path {
        "email" => Some("ann@example.com"),
        "firstName" => Some("Ann <&> \"O'Neil\""),
        "lastName" => Some(""),
        "company.name" => Some("Acme\r\nBcc: x@y"),
        "missing" => None,
        _ if path.len().is_multiple_of(2) => Some("é{{x}}\u{0}\u{2028}"),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    let Ok(template) = Template::compile(&source) else {
        return;
    };
    assert_eq!(template.fields().len(), template.field_paths().len());
    for html in [true, false] {
        let out = template.render_with(lookup, html);
        // All fields missing: defaults or empty.
        template.render(&vec![None; template.field_paths().len()], html);
        if html {
            // Escaped values never introduce markup characters beyond the literals.
            assert!(out.matches('<').count() <= source.matches('<').count());
        }
    }
});
