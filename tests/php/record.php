<?php
// Included by the test scripts: when the WebSocket URL carries ?log=/path,
// appends one JSON line per event to that file, so a test can see what PHP
// saw on events whose answer never reaches the client (close, fatal errors):
// its WS_*, REQUEST_*, QUERY_STRING and CONTENT_* variables, and the message
// body as "body".
function record_event(): void
{
    $log = $_GET['log'] ?? '';
    if ($log === '') {
        return;
    }
    $seen = [];
    foreach ($_SERVER as $name => $value) {
        if (is_string($value) && (str_starts_with($name, 'WS_') || str_starts_with($name, 'REQUEST_')
            || in_array($name, ['QUERY_STRING', 'CONTENT_TYPE', 'CONTENT_LENGTH'], true))) {
            $seen[$name] = $value;
        }
    }
    $seen['body'] = file_get_contents('php://input');
    $line = json_encode($seen, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE) . "\n";
    // One write(2) of the whole line on an O_APPEND descriptor ('a' mode), so
    // the lines of concurrent workers never interleave. A reader can still see
    // a line half written (the kernel shows a write to readers page by page):
    // readers take a last line without its "\n" for not written yet
    // (EventLog::events in tests/support/mod.rs).
    $file = fopen($log, 'ab');
    if ($file === false) {
        error_log("record.php: cannot open $log");
        return;
    }
    $written = fwrite($file, $line);
    fclose($file);
    if ($written !== strlen($line)) {
        error_log("record.php: short write to $log ($written of " . strlen($line) . ' bytes)');
    }
}
