<?php
// The script ws2fcgi-bench expects behind ws2fcgi (see bench/README.md).
//
//   open     sleeps ?open_ms= milliseconds (if any), joins the channel named
//            by ?channel= (if any), sends nothing
//   message  "pub:<data>" publishes <data> to that channel through the
//            control socket and sends nothing back; anything else is echoed
//            (binary stays binary)
//   close    nothing
//
// Publishing uses a minimal inline control client: one persistent Unix socket
// per PHP-FPM worker, one JSON line out, one reply line back.

function bench_control()
{
    $path = $_SERVER['WS_CONTROL_SOCKET'] ?? '';
    if ($path === '') {
        return null;
    }
    $socket = @stream_socket_client(
        'unix://' . $path,
        $errno,
        $errstr,
        1.0,
        STREAM_CLIENT_CONNECT | STREAM_CLIENT_PERSISTENT
    );
    if ($socket === false) {
        error_log("bench.php: control socket $path: $errstr");
        return null;
    }
    stream_set_timeout($socket, 5);
    return $socket;
}

// Returns the decoded reply, or null when the control socket is unusable.
function bench_publish($channel, $data)
{
    $line = json_encode(['op' => 'publish', 'channel' => $channel, 'data' => $data]) . "\n";
    // A persistent socket may have been closed by a restarted daemon since
    // this worker last used it: on failure, reconnect once and retry.
    for ($attempt = 0; $attempt < 2; $attempt++) {
        $socket = bench_control();
        if ($socket === null) {
            return null;
        }
        if (@fwrite($socket, $line) === strlen($line)) {
            $reply = fgets($socket, 65536);
            if ($reply !== false) {
                return json_decode($reply, true);
            }
        }
        fclose($socket);
    }
    return null;
}

$channel = $_GET['channel'] ?? '';

switch ($_SERVER['WS_EVENT'] ?? '') {
    case 'open':
        // ?open_ms=N: an open handler that takes N ms (the `storm` scenario).
        $open_ms = (int) ($_GET['open_ms'] ?? 0);
        if ($open_ms > 0) {
            usleep($open_ms * 1000);
        }
        if ($channel !== '') {
            header('X-WS-Join: ' . $channel);
        }
        break;

    case 'message':
        $data = file_get_contents('php://input');
        if (strncmp($data, 'pub:', 4) === 0) {
            $reply = bench_publish($channel, substr($data, 4));
            if (!is_array($reply) || empty($reply['ok'])) {
                // The sender sees this as an "other" message in the figures.
                echo 'err:publish failed: ' . json_encode($reply);
            }
            break;
        }
        if (($_SERVER['WS_MESSAGE_TYPE'] ?? 'text') === 'binary') {
            header('Content-Type: application/octet-stream');
        }
        echo $data;
        break;
}
