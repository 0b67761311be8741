<?php
// The control-socket tests' handler. Every push goes through the real PHP
// client (php/Ws2fcgi.php) talking to the daemon's control socket.
//
//   open     answers the connection id; joins the channels of ?join=a,b
//            (X-WS-Join) and sets metadata from ?meta_<name>=<value>
//            (X-WS-Meta-<name>).
//   message  a text message that is a JSON object {"call": "<method>", "args": {...}}
//            calls that method of Ws2fcgi\Client with "args" as named arguments,
//            every "$self" in them replaced by WS_CONNECTION_ID, and answers
//            {"result": <return value>} or {"error": "<exception message>"}.
//            Two calls are directives instead of client methods:
//              {"call": "leave-header", "args": {"channel": "x"}}  answers "left x" with X-WS-Leave: x
//              {"call": "meta-env"}  answers the WS_META_* variables as a JSON object
//            Any other message is published to the channel ?room= (default "room"),
//            binary as binary, leaving out the sender when ?except=self; no answer.
//   every event is recorded (?log=).
require __DIR__ . '/record.php';
require __DIR__ . '/../../php/Ws2fcgi.php';
record_event();

$self = $_SERVER['WS_CONNECTION_ID'];

function with_self(mixed $value, string $self): mixed
{
    if ($value === '$self') {
        return $self;
    }
    if (is_array($value)) {
        return array_map(fn ($v) => with_self($v, $self), $value);
    }
    return $value;
}

switch ($_SERVER['WS_EVENT']) {
    case 'open':
        if (($_GET['join'] ?? '') !== '') {
            header('X-WS-Join: ' . $_GET['join']);
        }
        foreach ($_GET as $name => $value) {
            if (str_starts_with($name, 'meta_')) {
                header('X-WS-Meta-' . substr($name, 5) . ': ' . $value);
            }
        }
        echo $self;
        break;
    case 'message':
        $body = file_get_contents('php://input');
        $binary = $_SERVER['WS_MESSAGE_TYPE'] === 'binary';
        $command = $binary ? null : json_decode($body, true);
        $ws = new Ws2fcgi\Client();
        if (!is_array($command) || !isset($command['call'])) {
            $except = ($_GET['except'] ?? '') === 'self' ? $self : null;
            $ws->publish($_GET['room'] ?? 'room', $body, except: $except, binary: $binary);
            break;
        }
        $args = with_self($command['args'] ?? [], $self);
        switch ($command['call']) {
            case 'leave-header':
                header('X-WS-Leave: ' . $args['channel']);
                echo 'left ' . $args['channel'];
                break;
            case 'meta-env':
                $meta = [];
                foreach ($_SERVER as $name => $value) {
                    if (str_starts_with($name, 'WS_META_')) {
                        $meta[$name] = $value;
                    }
                }
                ksort($meta);
                echo json_encode((object) $meta);
                break;
            default:
                try {
                    $result = $ws->{$command['call']}(...$args);
                    echo json_encode(['result' => $result], JSON_UNESCAPED_SLASHES);
                } catch (Ws2fcgi\Exception $e) {
                    echo json_encode(['error' => $e->getMessage()], JSON_UNESCAPED_SLASHES);
                }
        }
        break;
}
