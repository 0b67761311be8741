//! The test harness's own tests: what `tests/support/` promises the other
//! test files. A flaky helper fails tests at random, so its races are pinned
//! here against the real writer.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};

use support::*;

/// Appends `text` to the log file as another process would.
fn append(log: &EventLog, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log.path)
        .expect("open the log");
    file.write_all(text.as_bytes()).expect("append");
}

/// A reader once parsed a line PHP was still writing and panicked with "EOF
/// while parsing a string" (tests/faults.rs, hostile frames). A last line
/// without its newline is not a record yet.
#[test]
fn a_half_written_last_line_is_left_for_later() {
    let log = EventLog::new();
    assert!(log.events().is_empty(), "no file yet: no events");
    append(&log, "{\"WS_EVENT\":\"open\"}\n{\"WS_EVENT\":\"clo");
    let events = log.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["WS_EVENT"], "open");
    append(&log, "se\"}\n");
    let events = log.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["WS_EVENT"], "close");
}

/// A complete line that is not JSON is a real defect (two writers
/// interleaved, a short write): it is reported, not skipped, with its line
/// number in the file (the log is read incrementally: line 1 was read by
/// an earlier call).
#[test]
#[should_panic(expected = "line 2: not a JSON record")]
fn a_complete_line_that_is_not_json_is_an_error() {
    let log = EventLog::new();
    append(&log, "{\"WS_EVENT\":\"open\"}\n");
    assert_eq!(log.events().len(), 1);
    append(&log, "{\"WS_EVE{\"WS_EVENT\":\"close\"}\n");
    log.events();
}

/// The log is read incrementally (a test polling it with many connections
/// once re-read and re-parsed the whole file at every poll): each record is
/// returned once, in order, whatever the reads in between saw.
#[test]
fn records_read_in_pieces_are_each_read_once() {
    let log = EventLog::new();
    let mut expected = Vec::new();
    for i in 0..50 {
        let line = format!(
            "{{\"WS_EVENT\":\"close\",\"WS_CONNECTION_ID\":\"c{}\"}}\n",
            i % 5
        );
        // Each line in two writes, read after each.
        let (head, tail) = line.split_at(line.len() / 2);
        append(&log, head);
        assert_eq!(log.events().len(), expected.len());
        append(&log, tail);
        expected.push(format!("c{}", i % 5));
        let ids: Vec<String> = log
            .events()
            .iter()
            .map(|e| e["WS_CONNECTION_ID"].as_str().expect("id").to_owned())
            .collect();
        assert_eq!(ids, expected);
    }
    assert_eq!(log.closes_of("c3").len(), 10);
    assert!(log.closes_of("c9").is_empty());
}

/// The real recorder (`tests/php/record.php`) run by two php-cli processes
/// at once, as two php-fpm workers would, appending lines of 2 to 40 KiB
/// (each crosses page boundaries) while this test reads the log: every read
/// parses, no record is lost or torn, and each writer's records are whole
/// and in its order (one `write` per line on an O_APPEND descriptor).
#[test]
fn two_php_writers_and_a_reader_see_whole_records_only() {
    const LINES: usize = 200;
    let log = EventLog::new();
    let mut writers: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let code = format!(
                "$_GET['log'] = $argv[1]; require $argv[2];
                 for ($i = 0; $i < {LINES}; $i++) {{
                     $_SERVER['WS_EVENT'] = 'message';
                     $_SERVER['WS_CONNECTION_ID'] = '{name}';
                     $_SERVER['WS_SEQ'] = (string) $i;
                     $_SERVER['WS_PAD'] = str_repeat('{name}', 2048 + ($i * 7919) % (38 * 1024));
                     record_event();
                 }}"
            );
            Command::new("php")
                .arg("-r")
                .arg(code)
                .arg("--")
                .arg(&log.path)
                .arg(script("record.php"))
                .stdin(Stdio::null())
                .spawn()
                .expect("run php (php-cli)")
        })
        .collect();
    loop {
        let done = writers
            .iter_mut()
            .all(|w| w.try_wait().expect("wait for php").is_some());
        let events = log.events();
        for name in ["a", "b"] {
            let seqs: Vec<_> = events
                .iter()
                .filter(|e| e["WS_CONNECTION_ID"] == name)
                .map(|e| e["WS_SEQ"].as_str().expect("WS_SEQ").to_owned())
                .collect();
            let expected: Vec<_> = (0..seqs.len()).map(|i| i.to_string()).collect();
            assert_eq!(seqs, expected, "writer {name}'s records, in order");
        }
        for event in &events {
            let pad = event["WS_PAD"].as_str().expect("WS_PAD");
            let name = event["WS_CONNECTION_ID"].as_str().expect("id");
            assert!(
                pad.bytes().all(|b| b == name.as_bytes()[0]),
                "a torn record"
            );
        }
        if done {
            assert_eq!(events.len(), 2 * LINES, "every record, once");
            break;
        }
    }
    for mut writer in writers {
        assert!(writer.wait().expect("php").success(), "php failed");
    }
}
