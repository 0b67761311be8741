//! A connection's own CGI variables, kept compactly (`conn_vars::Builder`)
//! and written back (`OwnVars::push_to`): PHP must receive exactly the
//! pairs given, in order, whatever the client made of the names and values.
//!
//! The input is pieces split at 0xff: a piece starting with 0xfe is a
//! request target followed by its path and query (the next two pieces), a
//! piece 0xfd alone the connection id, any other a name followed by its
//! value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::conn_vars::Builder;
use ws2fcgi::fcgi::push_param;

const ID: [&[u8]; 3] = [b"web-1", b".", b"0123456789abcdef0123456789abcdef01234567"];

fuzz_target!(|data: &[u8]| {
    let mut builder = Builder::new();
    let mut expected = Vec::new();
    let mut pieces = data.split(|&b| b == 0xff);
    while let Some(piece) = pieces.next() {
        match piece.split_first() {
            Some((0xfe, target)) => {
                let target = String::from_utf8_lossy(target);
                let path = String::from_utf8_lossy(pieces.next().unwrap_or(b""));
                let query = String::from_utf8_lossy(pieces.next().unwrap_or(b""));
                builder.uri(&target, &path, &query);
                push_param(&mut expected, b"REQUEST_URI", target.as_bytes());
                push_param(&mut expected, b"DOCUMENT_URI", path.as_bytes());
                push_param(&mut expected, b"QUERY_STRING", query.as_bytes());
                push_param(&mut expected, b"SCRIPT_NAME", path.as_bytes());
            }
            Some((0xfd, [])) => {
                builder.connection_id();
                push_param(&mut expected, b"WS_CONNECTION_ID", &ID.concat());
            }
            _ => {
                let value = pieces.next().unwrap_or(b"");
                builder.var(piece, value);
                push_param(&mut expected, piece, value);
            }
        }
    }
    let vars = builder.finish();
    let mut out = Vec::new();
    vars.push_to(&ID, &mut out);
    assert_eq!(out, expected);
});
