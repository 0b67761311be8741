<?php
// Misbehaves on request, for tests/limits.rs, tests/faults.rs and tests/admin.rs.
// Every event is recorded first (?log=, see record.php).
//
// The open event, by query parameter:
//   ?open=sleep&ms=N        sleeps N ms, then accepts
//   ?open=header&bytes=N    answers with one header of N bytes
//   ?open=body&bytes=N      answers with a body of N bytes
//   ?open=status&status=S   answers with "Status: S"
//   (none)                  accepts with "hello <connection id>"
// The close event: ?close_ms=N sleeps N ms.
// Message events are commands:
//   sleep N                 sleeps N ms, answers "slept N"
//   pid PATH N              writes getmypid() and "\n" to PATH, sleeps N ms, answers "survived"
//   header N                one header of N bytes, answers "header"
//   body N                  answers N bytes of "x"
//   status S                answers with "Status: S" and the body "status"
//   anything else           echoed back
require __DIR__ . '/record.php';
record_event();

function big_header(int $bytes): void
{
    header('X-Big: ' . str_repeat('h', max(0, $bytes - 7)));
}

switch ($_SERVER['WS_EVENT']) {
    case 'open':
        switch ($_GET['open'] ?? '') {
            case 'sleep':
                usleep((int) $_GET['ms'] * 1000);
                break;
            case 'header':
                big_header((int) $_GET['bytes']);
                break;
            case 'body':
                echo str_repeat('x', (int) $_GET['bytes']);
                exit;
            case 'status':
                header('Status: ' . $_GET['status']);
                exit;
        }
        echo 'hello ' . $_SERVER['WS_CONNECTION_ID'];
        break;
    case 'message':
        $words = explode(' ', file_get_contents('php://input'));
        switch ($words[0]) {
            case 'sleep':
                usleep((int) $words[1] * 1000);
                echo "slept {$words[1]}";
                break;
            case 'pid':
                // One line: the reader takes the pid once its "\n" is there.
                file_put_contents($words[1], getmypid() . "\n");
                usleep((int) $words[2] * 1000);
                echo 'survived';
                break;
            case 'header':
                big_header((int) $words[1]);
                echo 'header';
                break;
            case 'body':
                echo str_repeat('x', (int) $words[1]);
                break;
            case 'status':
                header('Status: ' . $words[1]);
                echo 'status';
                break;
            default:
                echo implode(' ', $words);
        }
        break;
    case 'close':
        usleep((int) ($_GET['close_ms'] ?? 0) * 1000);
        break;
}
