<?php
// For tests/budgets.rs: a slow handler whose log stays small however large
// the messages are. Every event is appended to ?log= as one JSON line with
// WS_EVENT, WS_CONNECTION_ID, the close code and reason, and, for a message,
// its length and first 32 bytes (not the body).
//   open     joins the channels of ?join=a,b (X-WS-Join); answers nothing
//   message  sleeps ?ms= milliseconds; answers nothing
//   close    recorded only
$event = $_SERVER['WS_EVENT'];
$seen = [
    'WS_EVENT' => $event,
    'WS_CONNECTION_ID' => $_SERVER['WS_CONNECTION_ID'] ?? '',
];
if ($event === 'message') {
    $body = file_get_contents('php://input');
    $seen['len'] = strlen($body);
    $seen['head'] = substr($body, 0, 32);
    usleep((int) ($_GET['ms'] ?? 0) * 1000);
}
if ($event === 'close') {
    $seen['WS_CLOSE_CODE'] = $_SERVER['WS_CLOSE_CODE'] ?? '';
    $seen['WS_CLOSE_REASON'] = $_SERVER['WS_CLOSE_REASON'] ?? '';
}
if ($event === 'open' && ($_GET['join'] ?? '') !== '') {
    header('X-WS-Join: ' . $_GET['join']);
}
$log = $_GET['log'] ?? '';
if ($log !== '') {
    $line = json_encode($seen, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE) . "\n";
    file_put_contents($log, $line, FILE_APPEND | LOCK_EX);
}
