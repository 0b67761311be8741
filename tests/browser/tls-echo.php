<?php

declare(strict_types=1);

// The TLS browser test's script: the open event answers with how PHP saw
// the connection; every message comes back as it was sent.
if ($_SERVER['WS_EVENT'] === 'open') {
    echo json_encode([
        'https' => $_SERVER['HTTPS'] ?? null,
        'scheme' => $_SERVER['REQUEST_SCHEME'] ?? null,
        'protocol' => $_SERVER['SSL_PROTOCOL'] ?? null,
        'verify' => $_SERVER['SSL_CLIENT_VERIFY'] ?? null,
    ]);
} elseif ($_SERVER['WS_EVENT'] === 'message') {
    echo file_get_contents('php://input');
}
