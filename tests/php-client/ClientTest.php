<?php

/**
 * Tests of Ws2fcgi\Client (loaded through php/Ws2fcgi.php, the file for
 * code without Composer) against a fake control server (fake_server.php,
 * started with proc_open). No daemon, no PHPUnit:
 *
 *   php tests/php-client/ClientTest.php
 *
 * The last line of output is "N passed, N failed"; the exit status is 1 when
 * anything failed.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/Ws2fcgi.php';

use Ws2fcgi\Client;
use Ws2fcgi\ClientInterface;
use Ws2fcgi\Exception as WsException;
use Ws2fcgi\Exception\ConnectException;
use Ws2fcgi\Exception\DaemonException;
use Ws2fcgi\Exception\EncodingException;
use Ws2fcgi\Exception\ProtocolException;
use Ws2fcgi\Exception\TimeoutException;
use Ws2fcgi\Exception\Ws2fcgiException;

error_reporting(E_ALL);
set_error_handler(static function (int $no, string $message, string $file, int $line): bool {
    throw new ErrorException($message, 0, $no, $file, $line);
});

// ------------------------------------------------------------------ harness

final class FakeServer
{
    /** @var resource */
    private $proc;
    /** @var array<int, resource> */
    private array $pipes = [];

    public function __construct(public readonly string $socket, public readonly string $log)
    {
        $this->proc = proc_open(
            [PHP_BINARY, __DIR__ . '/fake_server.php', $socket, $log],
            [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => STDERR],
            $this->pipes,
        );
        if (!is_resource($this->proc)) {
            throw new RuntimeException('cannot start fake_server.php');
        }
        $read = [$this->pipes[1]];
        $w = $e = null;
        if (stream_select($read, $w, $e, 10) !== 1 || trim((string) fgets($this->pipes[1])) !== 'ready') {
            $this->stop();
            throw new RuntimeException('fake_server.php did not become ready');
        }
    }

    public function stop(): void
    {
        if (!is_resource($this->proc)) {
            return;
        }
        foreach ($this->pipes as $p) {
            if (is_resource($p)) {
                fclose($p); // stdin EOF: the server exits on its own
            }
        }
        $deadline = microtime(true) + 5;
        while (proc_get_status($this->proc)['running'] && microtime(true) < $deadline) {
            usleep(10_000);
        }
        if (proc_get_status($this->proc)['running']) {
            proc_terminate($this->proc);
        }
        proc_close($this->proc);
    }

    /**
     * Every record of the log: requests ("line"), ends of a connection
     * ("closed" by the server, "eof" from the client), delayed replies written ("sent").
     *
     * The server appends while we read, and a read can end inside a line it
     * is still writing: a last line without its "\n" is not a record yet. A
     * complete line that is not JSON is a defect of the server, not skipped.
     *
     * @return list<array<string, mixed>>
     */
    private function records(): array
    {
        clearstatcache(true, $this->log);
        $text = is_file($this->log) ? file_get_contents($this->log) : '';
        if ($text === false) {
            throw new RuntimeException("cannot read {$this->log}");
        }
        $end = strrpos($text, "\n");
        $complete = $end === false ? '' : substr($text, 0, $end + 1);
        $records = [];
        foreach (explode("\n", $complete) as $number => $line) {
            if ($line === '') {
                continue;
            }
            $record = json_decode($line, true);
            if (!is_array($record)) {
                throw new RuntimeException(sprintf('%s line %d is not a JSON record: %s', $this->log, $number + 1, $line));
            }
            $records[] = $record;
        }
        return $records;
    }

    /** @return list<array{conn: int, line: string, req: mixed}> every request line received so far */
    public function requests(): array
    {
        $out = [];
        foreach ($this->records() as $entry) {
            if (isset($entry['line'])) {
                $entry['req'] = json_decode($entry['line'], true);
                $out[] = $entry;
            }
        }
        return $out;
    }

    /** Waits (up to 5 s) until the server has closed its connection number $conn. */
    public function waitClosed(int $conn): bool
    {
        return $this->waitFor(fn (array $entry) => ($entry['closed'] ?? false) && $entry['conn'] === $conn);
    }

    /**
     * Waits (up to 10 s) until connection $conn is done with its delayed
     * reply: the server wrote it ("sent"), or the connection ended first.
     */
    public function waitLateReplyGone(int $conn): bool
    {
        return $this->waitFor(
            fn (array $entry) => $entry['conn'] === $conn
                && (isset($entry['sent']) || ($entry['closed'] ?? false) || ($entry['eof'] ?? false)),
            10,
        );
    }

    /** Polls the log until a record satisfies $match, for up to $seconds. */
    private function waitFor(callable $match, float $seconds = 5): bool
    {
        $deadline = microtime(true) + $seconds;
        do {
            foreach ($this->records() as $entry) {
                if ($match($entry)) {
                    return true;
                }
            }
            usleep(5_000);
        } while (microtime(true) < $deadline);
        return false;
    }

    /** @return array{conn: int, line: string, req: mixed} */
    public function last(): array
    {
        $all = $this->requests();
        return $all === [] ? ['conn' => 0, 'line' => '', 'req' => null] : $all[count($all) - 1];
    }
}

$passed = 0;
$failed = 0;

function check(string $name, bool $ok, string $detail = ''): void
{
    global $passed, $failed;
    if ($ok) {
        $passed++;
        echo "ok   $name\n";
    } else {
        $failed++;
        echo "FAIL $name" . ($detail !== '' ? " — $detail" : '') . "\n";
    }
}

function same(string $name, mixed $expected, mixed $actual): void
{
    check($name, $expected === $actual, 'expected ' . export($expected) . ', got ' . export($actual));
}

function export(mixed $v): string
{
    return json_encode($v, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE) ?: var_export($v, true);
}

/**
 * Runs $fn, expecting it to throw $class with a message containing $contains
 * (or equal to it when $exact). Returns the throwable, or null.
 */
function throws(string $name, callable $fn, string $class, string $contains = '', bool $exact = false): ?Throwable
{
    try {
        $fn();
    } catch (Throwable $e) {
        $msgOk = $exact ? $e->getMessage() === $contains : str_contains($e->getMessage(), $contains);
        check($name, $e instanceof $class && $msgOk, get_class($e) . ': ' . $e->getMessage());
        return $e;
    }
    check($name, false, "no exception (expected $class)");
    return null;
}

/** Runs one test section; an unexpected throwable fails it instead of aborting the run. */
function section(string $title, callable $fn): void
{
    echo "# $title\n";
    try {
        $fn();
    } catch (Throwable $e) {
        check("$title: unexpected " . get_class($e), false, $e->getMessage() . ' at ' . $e->getFile() . ':' . $e->getLine());
    }
}

$dir = sys_get_temp_dir() . '/ws2fcgi-php-client-' . getmypid() . '-' . bin2hex(random_bytes(3));
mkdir($dir, 0700);
$socket = "$dir/control.sock";
$server = new FakeServer($socket, "$dir/requests.log");

// ------------------------------------------------------------------ tests

try {
    section('socket from the environment', function () use ($socket, $server) {
        unset($_SERVER['WS_CONTROL_SOCKET']);
        putenv('WS_CONTROL_SOCKET');
        throws('missing socket → Exception naming WS_CONTROL_SOCKET', fn () => new Client(), ConnectException::class, 'WS_CONTROL_SOCKET');

        $_SERVER['WS_CONTROL_SOCKET'] = $socket;
        $ws = new Client();
        same('$_SERVER[WS_CONTROL_SOCKET] is used', $socket, $ws->socketPath());
        same('a call through it reaches the server', 7, $ws->stats()['connections'] ?? null);
        unset($_SERVER['WS_CONTROL_SOCKET']);

        putenv("WS_CONTROL_SOCKET=unix://$socket");
        $ws = new Client();
        same('getenv(WS_CONTROL_SOCKET) is the fallback, unix:// stripped', $socket, $ws->socketPath());
        same('a call through it reaches the server', ['connections' => 7, 'channels' => 2], $ws->stats());
        putenv('WS_CONTROL_SOCKET');

        same('an explicit unix:// path is accepted', $socket, (new Client("unix://$socket"))->socketPath());
        throws('timeout must be positive', fn () => new Client($socket, 0.0), InvalidArgumentException::class, 'timeout');
    });

    $ws = new Client($socket, 2.0);
    check('Client implements ClientInterface', $ws instanceof ClientInterface);

    section('publish', function () use ($ws, $server) {
        same('returns "delivered"', 3, $ws->publish('room/1', 'héllo / wörld'));
        $last = $server->last();
        same('JSON shape, no except, no binary', ['op' => 'publish', 'channel' => 'room/1', 'data' => 'héllo / wörld'], $last['req']);
        same('slashes and unicode unescaped, one line', '{"op":"publish","channel":"room/1","data":"héllo / wörld"}', $last['line']);

        $ws->publish('room', "multi\nline", except: 'c42');
        same('except as a string', ['op' => 'publish', 'channel' => 'room', 'data' => "multi\nline", 'except' => 'c42'], $server->last()['req']);

        $ws->publish('room', 'x', except: ['a' => 'c1', 'b' => 'c2']);
        same('except as a list (keys dropped)', '{"op":"publish","channel":"room","data":"x","except":["c1","c2"]}', $server->last()['line']);

        $ws->publish('room', 'x', except: []);
        same('empty except list is a JSON list', '{"op":"publish","channel":"room","data":"x","except":[]}', $server->last()['line']);

        $bytes = "\x00\xff\xfe binary \x80";
        $ws->publish('room', $bytes, binary: true);
        $req = $server->last()['req'];
        same('binary: base64 data + "binary":true', ['op' => 'publish', 'channel' => 'room', 'data' => base64_encode($bytes), 'binary' => true], $req);
        same('binary: data round-trips', $bytes, base64_decode((string) $req['data'], true));

        throws('invalid UTF-8 text → Exception suggesting binary', fn () => $ws->publish('room', "\xff\xfe"), EncodingException::class, 'binary: true');
        throws('except list with a non-string → InvalidArgumentException', fn () => $ws->publish('room', 'x', except: [['nested']]), InvalidArgumentException::class, 'except');

        $big = str_repeat('0123456789abcdef', 65536); // 1 MiB
        same('a 1 MiB message goes through', 3, $ws->publish('room', $big));
        same('and arrives whole', strlen($big), strlen((string) ($server->last()['req']['data'] ?? '')));
    });

    section('send', function () use ($ws, $server) {
        same('to one id returns "delivered"', 1, $ws->send('c1', 'hi'));
        same('JSON shape', ['op' => 'send', 'to' => 'c1', 'data' => 'hi'], $server->last()['req']);
        same('to a list', 3, $ws->send(['c1', 'c2', 'c3'], 'hi'));
        same('list JSON shape', '{"op":"send","to":["c1","c2","c3"],"data":"hi"}', $server->last()['line']);
        $ws->send('c1', "\x01\x02", true);
        same('binary', ['op' => 'send', 'to' => 'c1', 'data' => base64_encode("\x01\x02"), 'binary' => true], $server->last()['req']);
    });

    section('join / leave / close / meta', function () use ($ws, $server) {
        same('join returns "found"', true, $ws->join('c1', 'room'));
        same('join JSON', '{"op":"join","conn":"c1","channel":"room"}', $server->last()['line']);
        same('join of a gone connection returns false', false, $ws->join('gone', 'room'));
        same('leave returns "found"', true, $ws->leave('c1', 'room'));
        same('leave JSON', '{"op":"leave","conn":"c1","channel":"room"}', $server->last()['line']);
        same('leave of a gone connection returns false', false, $ws->leave('gone', 'room'));

        same('close returns "closed"', true, $ws->close('c1'));
        same('close JSON with defaults', '{"op":"close","conn":"c1","code":1000,"reason":""}', $server->last()['line']);
        same('close of a gone connection returns false', false, $ws->close('gone', 4001, 'kicked'));
        same('close JSON with code and reason', ['op' => 'close', 'conn' => 'gone', 'code' => 4001, 'reason' => 'kicked'], $server->last()['req']);

        same('meta of a gone connection returns false', false, $ws->meta('gone', ['user' => '42']));
        same('meta returns "found"', true, $ws->meta('c1', ['user' => '42', 'typing' => null]));
        same('meta JSON', '{"op":"meta","conn":"c1","set":{"user":"42","typing":null}}', $server->last()['line']);
        $ws->meta('c1', ['user' => 42, 'score' => 1.5]);
        same('meta numbers become strings', ['user' => '42', 'score' => '1.5'], $server->last()['req']['set']);
        $ws->meta('c1', []);
        same('empty meta set is a JSON object', '{"op":"meta","conn":"c1","set":{}}', $server->last()['line']);
        $before = count($server->requests());
        throws('meta array value → InvalidArgumentException', fn () => $ws->meta('c1', ['x' => ['no']]), InvalidArgumentException::class, '"x"');
        same('…and nothing was sent', $before, count($server->requests()));
    });

    section('presence / stats / request', function () use ($ws, $server) {
        same('presence members', [
            ['id' => 'c1', 'meta' => ['user' => '42']],
            ['id' => 'c2', 'meta' => []],
        ], $ws->presence('room'));
        same('presence JSON', '{"op":"presence","channel":"room"}', $server->last()['line']);
        same('stats is the reply minus ok', ['connections' => 7, 'channels' => 2], $ws->stats());
        same('stats JSON', '{"op":"stats"}', $server->last()['line']);
        same('request returns the whole reply', ['ok' => true, 'nonce' => 'n1', 'conn_seq' => $ws->request(['op' => 'whoami'])['conn_seq']], $ws->request(['op' => 'echo', 'nonce' => 'n1']));
    });

    section('ok:false', function () use ($ws, $server) {
        $seq = $ws->request(['op' => 'whoami'])['conn_seq'];
        $e = throws('ok:false → Exception with the daemon\'s message', fn () => $ws->request(['op' => 'nope']), DaemonException::class, 'unknown op `nope`', true);
        same('getReply() holds the reply', ['ok' => false, 'error' => 'unknown op `nope`'], $e instanceof WsException ? $e->getReply() : null);
        same('getDaemonError() is the daemon\'s error', 'unknown op `nope`', $e instanceof DaemonException ? $e->getDaemonError() : null);
        check('every failure is a Ws2fcgiException and a (deprecated) Ws2fcgi\\Exception', $e instanceof Ws2fcgiException && $e instanceof WsException);
        same('the next call works on the same connection', $seq, $ws->request(['op' => 'whoami'])['conn_seq']);
    });

    section('non-JSON and broken replies', function () use ($ws) {
        $e = throws('non-JSON reply → Exception', fn () => $ws->request(['op' => '__garbage']), ProtocolException::class, 'not JSON');
        same('getReply() is null for transport errors', null, $e instanceof WsException ? $e->getReply() : 'n/a');
        same('the next call works', 7, $ws->stats()['connections']);
        throws('partial reply then EOF → Exception', fn () => $ws->request(['op' => '__partial']), ProtocolException::class, 'before replying');
        same('the next call works', 7, $ws->stats()['connections']);
        same('a reply split across writes is reassembled', ['ok' => true, 'slow' => 'yes'], $ws->request(['op' => '__slowline']));
    });

    section('timeout', function () use ($socket, $server) {
        $ws = new Client($socket, 0.3);
        $t = microtime(true);
        throws('no reply in time → Exception', fn () => $ws->request(['op' => '__sleep', 'ms' => 800]), TimeoutException::class, 'timed out');
        $elapsed = microtime(true) - $t;
        // Only a lower bound: the machine may be slow, but the client may never give up early.
        check('…not before the timeout', $elapsed >= 0.29, sprintf('%.3fs', $elapsed));
        $sleeps = array_values(array_filter($server->requests(), fn ($r) => ($r['req']['op'] ?? '') === '__sleep'));
        same('the timed-out request was not resent', 1, count($sleeps));
        $reply = $ws->request(['op' => 'echo', 'nonce' => 'after-timeout']);
        same('the next call gets its own reply', 'after-timeout', $reply['nonce'] ?? null);
        // Polled, not slept for: on a slow machine a fixed sleep could end
        // before the late reply is written, and the check below would pass
        // without testing anything.
        check('(the late reply was written, or its connection closed)', $sleeps !== [] && $server->waitLateReplyGone($sleeps[0]['conn']));
        $reply = $ws->request(['op' => 'echo', 'nonce' => 'later']);
        same('…and the late reply never shows up', ['ok' => true, 'nonce' => 'later'], ['ok' => $reply['ok'], 'nonce' => $reply['nonce'] ?? null]);
    });

    section('reconnect and retry', function () use ($ws, $server, $socket, $dir) {
        // The daemon closes the connection while the client is idle.
        $ws->request(['op' => '__hangup']);
        check('(the server hung up)', $server->waitClosed($server->last()['conn']));
        $before = $ws->request(['op' => 'whoami'])['conn_seq'];
        $lastConn = $server->last()['conn'];
        check('a connection closed while idle is replaced', $before === $lastConn, "conn_seq $before");
        same('…and the request was sent once', 1, count(array_filter($server->requests(), fn ($r) => $r['conn'] === $lastConn && ($r['req']['op'] ?? '') === 'whoami')));

        // The write fails (EPIPE): retried once on a fresh connection.
        $seq = $ws->request(['op' => '__shutrd'])['conn_seq'];
        $count = count($server->requests());
        $reply = $ws->request(['op' => 'echo', 'nonce' => 'retried']);
        same('a failed write is retried on a new connection', 'retried', $reply['nonce']);
        check('…which is a new connection', $reply['conn_seq'] !== $seq, "conn_seq {$reply['conn_seq']} vs $seq");
        same('…and the request arrived once', $count + 1, count($server->requests()));

        // The daemon dies after reading a request: no resend, Exception.
        $count = count($server->requests());
        throws('EOF after the write → Exception, not a retry', fn () => $ws->request(['op' => '__die']), ProtocolException::class, 'may or may not have been applied');
        same('…and the request arrived once', $count + 1, count($server->requests()));
        same('the next call works', 7, $ws->stats()['connections']);

        // The daemon restarts (new process, same socket path).
        $server->stop();
        $server2 = new FakeServer($socket, "$dir/requests2.log");
        try {
            same('after a daemon restart the next call reconnects', 7, $ws->stats()['connections'] ?? null);
            same('…sending the request once', 1, count($server2->requests()));
        } finally {
            $server2->stop();
        }
        throws('no daemon → Exception "cannot connect"', fn () => $ws->stats(), ConnectException::class, 'cannot connect');
    });

    $server->stop(); // already stopped, unless the section above failed half-way
    $server = new FakeServer($socket, "$dir/requests3.log");

    section('persistence', function () use ($socket, $server) {
        $a = new Client($socket);
        $b = new Client($socket);
        $seqA = $a->request(['op' => 'whoami'])['conn_seq'];
        same('persistent clients share one connection', $seqA, $b->request(['op' => 'whoami'])['conn_seq']);
        $c = new Client($socket, 5.0, false);
        check('a non-persistent client has its own', $c->request(['op' => 'whoami'])['conn_seq'] !== $seqA);

        // An earlier request left its reply unread in the persistent stream
        // (e.g. a php-fpm request killed between write and read).
        $raw = stream_socket_client("unix://$socket", $errno, $errstr, 1.0, STREAM_CLIENT_CONNECT | STREAM_CLIENT_PERSISTENT);
        fwrite($raw, '{"op":"echo","nonce":"orphan"}' . "\n");
        $ready = [$raw];
        $w = $e = null;
        check('(the orphaned reply arrived)', stream_select($ready, $w, $e, 5) === 1);
        $reply = $a->request(['op' => 'echo', 'nonce' => 'mine']);
        same('an orphaned reply in a reused connection is never taken for ours', 'mine', $reply['nonce']);
        check('…the connection was replaced', $reply['conn_seq'] !== $seqA, "conn_seq {$reply['conn_seq']}");
        same('…and b, sharing it, still works', 'b', $b->request(['op' => 'echo', 'nonce' => 'b'])['nonce']);

        $a->disconnect();
        same('after disconnect() the next call reconnects', 7, $a->stats()['connections']);
    });

    section('connect errors', function () use ($dir) {
        $ws = new Client("$dir/nothing-here.sock", 0.5);
        throws('a missing socket file → Exception naming the path', fn () => $ws->stats(), ConnectException::class, "$dir/nothing-here.sock");
    });
} finally {
    $server->stop();
    foreach (glob("$dir/*") ?: [] as $f) {
        @unlink($f);
    }
    @rmdir($dir);
}

echo "$passed passed, $failed failed\n";
exit($failed === 0 ? 0 : 1);
