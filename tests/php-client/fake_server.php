<?php

/**
 * A fake ws2fcgi control server for ClientTest.php.
 *
 *   php fake_server.php <socket path> <log path>
 *
 * Listens on a Unix socket, logs every request line it receives to <log path>
 * as {"conn":<connection number>,"line":"<raw line>"} (and {"conn":<n>,"eof":true}
 * when the client closes, {"conn":<n>,"closed":true} when we do), and answers with canned
 * replies. Prints "ready" on stdout once listening; exits when stdin closes
 * (the test died or finished) or on {"op":"__quit"}.
 *
 * Ordinary ops get plausible replies; ops starting with "__" misbehave on purpose:
 *   __garbage  reply a line that is not JSON
 *   __sleep    reply {"ok":true,"late":true} only after "ms" milliseconds, and log
 *              {"conn":<n>,"sent":"<the reply>"} once it is written
 *   __die      close the connection without replying
 *   __hangup   reply, then close the connection
 *   __shutrd   shut down the read side, then reply (the client's next write gets EPIPE)
 *   __partial  write half a reply, then close
 *   __slowline write the reply in two pieces 150 ms apart
 */

declare(strict_types=1);

[$_, $path, $log] = $argv + [null, null, null];
if ($path === null || $log === null) {
    fwrite(STDERR, "usage: php fake_server.php <socket path> <log path>\n");
    exit(2);
}

@unlink($path);
$server = stream_socket_server("unix://$path", $errno, $errstr);
if ($server === false) {
    fwrite(STDERR, "fake_server: cannot listen on $path: $errstr\n");
    exit(1);
}
$inode = fileinode($path);
stream_set_blocking(STDIN, false);
echo "ready\n";
fflush(STDOUT);

/** @var array<int, array{stream: resource, seq: int, shut: bool, buf: string, out: list<array{due: float, data: string, then: ?string}>}> $conns */
$conns = [];
$seq = 0;
$started = microtime(true);

while (microtime(true) - $started < 120) {
    $read = [$server, STDIN];
    foreach ($conns as $c) {
        if (!$c['shut']) {
            $read[] = $c['stream']; // a read-shut socket reads EOF forever; keep it open
        }
    }
    $write = $except = null;
    $n = stream_select($read, $write, $except, 0, 20_000);
    if ($n === false) {
        break;
    }
    foreach ($read as $r) {
        if ($r === STDIN) {
            if (fread(STDIN, 8192) === '' && feof(STDIN)) {
                break 2;
            }
            continue;
        }
        if ($r === $server) {
            $s = @stream_socket_accept($server, 0);
            if ($s !== false) {
                stream_set_blocking($s, false);
                $conns[(int) $s] = ['stream' => $s, 'seq' => ++$seq, 'buf' => '', 'out' => [], 'shut' => false];
            }
            continue;
        }
        $id = (int) $r;
        if (!isset($conns[$id])) {
            continue;
        }
        $data = fread($r, 65536);
        if ($data === '' || $data === false) {
            if (feof($r)) {
                fclose($r);
                record($log, ['conn' => $conns[$id]['seq'], 'eof' => true]);
                unset($conns[$id]);
            }
            continue;
        }
        $conns[$id]['buf'] .= $data;
        while (($pos = strpos($conns[$id]['buf'], "\n")) !== false) {
            $line = substr($conns[$id]['buf'], 0, $pos);
            $conns[$id]['buf'] = (string) substr($conns[$id]['buf'], $pos + 1);
            record($log, ['conn' => $conns[$id]['seq'], 'line' => $line]);
            foreach (answer($line, $conns[$id]['seq']) as $out) {
                $conns[$id]['out'][] = $out;
            }
        }
    }
    // Send what is due, in order; a pending delayed reply holds back the rest.
    $now = microtime(true);
    foreach ($conns as $id => $c) {
        while ($c['out'] !== [] && $c['out'][0]['due'] <= $now) {
            $out = array_shift($c['out']);
            if ($out['then'] === 'shutrd') {
                // Before the reply, never after: a client that got the reply
                // may write its next request at once, and that write must fail.
                stream_socket_shutdown($c['stream'], STREAM_SHUT_RD);
                $c['shut'] = true;
                $conns[$id]['shut'] = true;
            }
            if ($out['data'] !== '') {
                stream_set_blocking($c['stream'], true);
                @fwrite($c['stream'], $out['data']);
                stream_set_blocking($c['stream'], false);
            }
            if ($out['then'] === 'record') {
                record($log, ['conn' => $c['seq'], 'sent' => $out['data']]);
            }
            if ($out['then'] === 'close') {
                fclose($c['stream']);
                unset($conns[$id]);
                record($log, ['conn' => $c['seq'], 'closed' => true]);
                continue 2;
            }
            if ($out['then'] === 'quit') {
                break 3;
            }
        }
        $conns[$id]['out'] = $c['out'];
    }
}
clearstatcache();
if (@fileinode($path) === $inode) {
    @unlink($path); // only our own socket, not a successor's on the same path
}
exit(0);

/**
 * Appends one JSON line to the log: one write(2) on an O_APPEND descriptor
 * ('a' mode). The test reads while we write and ignores a last line without
 * its "\n" (FakeServer::records() in ClientTest.php).
 */
function record(string $log, array $entry): void
{
    $line = json_encode($entry, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE) . "\n";
    if (file_put_contents($log, $line, FILE_APPEND) !== strlen($line)) {
        fwrite(STDERR, "fake_server: short write to $log\n");
    }
}

/**
 * @return list<array{due: float, data: string, then: ?string}>
 */
function answer(string $line, int $seq): array
{
    $now = microtime(true);
    $reply = static fn (array $r, ?string $then = null, float $delay = 0.0): array => [
        'due' => $now + $delay,
        'data' => json_encode($r, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE) . "\n",
        'then' => $then,
    ];
    $req = json_decode($line, true);
    if (!is_array($req) || !is_string($req['op'] ?? null)) {
        return [$reply(['ok' => false, 'error' => 'request is not a JSON object with an "op"'])];
    }
    switch ($req['op']) {
        case 'publish':
            return [$reply(['ok' => true, 'delivered' => 3])];
        case 'send':
            return [$reply(['ok' => true, 'delivered' => is_array($req['to']) ? count($req['to']) : 1])];
        case 'join':
        case 'leave':
        case 'meta':
            return [$reply(['ok' => true, 'found' => $req['conn'] !== 'gone'])];
        case 'close':
            return [$reply(['ok' => true, 'closed' => $req['conn'] !== 'gone'])];
        case 'presence':
            return [$reply(['ok' => true, 'members' => [
                ['id' => 'c1', 'meta' => ['user' => '42']],
                ['id' => 'c2', 'meta' => new stdClass()],
            ]])];
        case 'stats':
            return [$reply(['ok' => true, 'connections' => 7, 'channels' => 2])];
        case 'whoami':
            return [$reply(['ok' => true, 'conn_seq' => $seq])];
        case 'echo':
            return [$reply(['ok' => true, 'nonce' => $req['nonce'] ?? null, 'conn_seq' => $seq])];
        case '__garbage':
            return [['due' => $now, 'data' => "this is not json\n", 'then' => null]];
        case '__sleep':
            return [$reply(['ok' => true, 'late' => true], 'record', ($req['ms'] ?? 1000) / 1000)];
        case '__die':
            return [['due' => $now, 'data' => '', 'then' => 'close']];
        case '__hangup':
            return [$reply(['ok' => true], 'close')];
        case '__shutrd':
            return [$reply(['ok' => true, 'conn_seq' => $seq], 'shutrd')];
        case '__partial':
            return [['due' => $now, 'data' => '{"ok":tr', 'then' => 'close']];
        case '__slowline':
            return [
                ['due' => $now, 'data' => '{"ok":true,', 'then' => null],
                ['due' => $now + 0.15, 'data' => '"slow":"yes"}' . "\n", 'then' => null],
            ];
        case '__quit':
            return [$reply(['ok' => true], 'quit')];
        default:
            return [$reply(['ok' => false, 'error' => "unknown op `{$req['op']}`"])];
    }
}
