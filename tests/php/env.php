<?php
// Answers open and message events with everything PHP sees, as JSON:
// $_SERVER, the environment (getenv()), $_GET, and the request body in hex.
require __DIR__ . '/record.php';
record_event();
if ($_SERVER['WS_EVENT'] === 'close') {
    exit;
}
echo json_encode([
    'server' => $_SERVER,
    'env' => getenv(),
    'get' => $_GET,
    'body_hex' => bin2hex(file_get_contents('php://input')),
], JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE);
