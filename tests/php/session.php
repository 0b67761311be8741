<?php
// A plain PHP session across the events of one connection: the open event
// stores ?name= in $_SESSION (unless the session has one already) and counts
// the opens; message events read both back.
session_start();
switch ($_SERVER['WS_EVENT']) {
    case 'open':
        $_SESSION['name'] ??= $_GET['name'] ?? '';
        $_SESSION['opens'] = ($_SESSION['opens'] ?? 0) + 1;
        echo json_encode(['id' => session_id()]);
        break;
    case 'message':
        echo json_encode([
            'id' => session_id(),
            'name' => $_SESSION['name'] ?? null,
            'opens' => $_SESSION['opens'] ?? null,
        ]);
        break;
}
