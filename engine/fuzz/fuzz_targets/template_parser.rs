//! Arbitrary text through `Template::compile` and `Template::compile_html`; compiled
//! templates are rendered with a fixed value map, HTML-escaped and not. Nothing may panic.
//! An HTML template compiles exactly when the plain one does, or fails on a field's context
//! (the error names the field); its values never add markup characters.
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
        "customFields.url" => Some(" JavaScript:alert(1)"),
        _ if path.len().is_multiple_of(2) => Some("é{{x}}\u{0}\u{2028}"),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    let Ok(template) = Template::compile(&source) else {
        assert!(Template::compile_html(&source).is_err());
        return;
    };
    match Template::compile_html(&source) {
        Ok(html) => {
            assert_eq!(html.field_paths(), template.field_paths());
            let out = html.render_with(lookup, true);
            let literal_lt: usize = html
                .segments()
                .iter()
                .map(|s| match s {
                    mailcore_engine::Segment::Literal(l) => l.matches('<').count(),
                    _ => 0,
                })
                .sum();
            assert_eq!(out.matches('<').count(), literal_lt);
        }
        Err(mailcore_engine::Error::Template { field, .. }) => {
            // Not a syntax error (the plain compile passed): a context error names the field.
            assert!(field.is_some());
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
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
