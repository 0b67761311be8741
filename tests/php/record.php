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
    file_put_contents($log, $line, FILE_APPEND | LOCK_EX);
}
