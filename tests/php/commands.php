<?php
// Each message is a command:
//   whoami  answers WS_META_USER_ID (or "nobody")
//   forget  deletes the user-id metadata
//   bye     answers "farewell" and closes with 4000 "bye"
//   fatal   calls an undefined function (a PHP fatal error)
//   other   echoed back
// The open event sets the metadata user-id = 42. Every event is recorded (?log=).
require __DIR__ . '/record.php';
record_event();
switch ($_SERVER['WS_EVENT']) {
    case 'open':
        header('X-WS-Meta-User-Id: 42');
        break;
    case 'message':
        $command = file_get_contents('php://input');
        switch ($command) {
            case 'whoami':
                echo $_SERVER['WS_META_USER_ID'] ?? 'nobody';
                break;
            case 'forget':
                header('X-WS-Meta-User-Id:');
                echo 'forgotten';
                break;
            case 'bye':
                header('X-WS-Close: 4000 bye');
                echo 'farewell';
                break;
            case 'fatal':
                this_function_does_not_exist();
                echo 'unreachable';
                break;
            default:
                echo $command;
        }
        break;
}
