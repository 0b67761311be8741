//! A Pusher HTTP API request's query string, path and body →
//! `pusher::api_signature`: whatever a client sends, parsing and checking
//! never panic, nothing unsigned passes, and what is signed as an SDK signs
//! it passes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::pusher::api_signature::{Query, Request, sign, verify};

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    // method \n path \n query \n body
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let (Some(method), Some(path), Some(query)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let body = parts.next().unwrap_or(b"");
    let (Ok(method), Ok(path), Ok(query)) = (
        std::str::from_utf8(method),
        std::str::from_utf8(path),
        std::str::from_utf8(query),
    ) else {
        return;
    };
    if let Ok(parsed) = Query::parse(query) {
        let request = Request { method, path, query: &parsed, body };
        // A forged request passes only if it carries the real signature,
        // which the fuzzer cannot find: any success must be re-signable.
        if verify(KEY, SECRET, &request, NOW, 600).is_ok() {
            assert!(parsed.get("auth_signature").is_some());
        }
        let _ = parsed.signed_part();
    }
    // Signed as an SDK signs it (values without `&`, `=`, `%`), it passes.
    let value: String = query.chars().filter(|c| !matches!(c, '&' | '=' | '%')).collect();
    let signed = sign(KEY, SECRET, method, path, body, &[("info", &value)], NOW);
    let parsed = Query::parse(&signed).expect("a signed query parses");
    let request = Request { method, path, query: &parsed, body };
    assert_eq!(verify(KEY, SECRET, &request, NOW + 600, 600), Ok(()), "{signed}");
});
