<?php

declare(strict_types=1);

namespace Ws2fcgi;

use Ws2fcgi\Exception\ConnectException;
use Ws2fcgi\Exception\ProtocolException;
use Ws2fcgi\Exception\TimeoutException;

/**
 * The client's connection to the control socket: one request line out, one
 * reply line back, with the reconnect and retry rules of php/README.md
 * ("Persistence, reconnects and retries"). It knows lines and JSON objects,
 * not operations; Client builds the requests and reads the replies.
 *
 * @internal used by Client; not part of the package's API
 */
final class ControlConnection
{
    /** @var resource|null */
    private $stream = null;

    /**
     * @param string $path       filesystem path of the socket (no `unix://` prefix)
     * @param float  $timeout    seconds allowed to connect, and to write a request and read its reply
     * @param bool   $persistent STREAM_CLIENT_PERSISTENT: shared by the php-fpm worker's requests
     */
    public function __construct(
        public readonly string $path,
        private readonly float $timeout,
        private readonly bool $persistent,
    ) {
    }

    /**
     * Closes the connection, persistent or not; the next round trip opens a
     * new one.
     */
    public function disconnect(): void
    {
        if (\is_resource($this->stream)) {
            \fclose($this->stream);
        }
        $this->stream = null;
    }

    /**
     * Writes one request line and reads its reply, with at most one retry.
     *
     * Retry rule (never applies a request twice): a connection found closed or
     * holding unread bytes before writing is replaced without counting as a
     * retry; a write that fails (EPIPE, reset) is retried once on a fresh
     * connection, since the line's final "\n" was not sent and the daemon
     * cannot have acted on it. Once the whole line is written, any failure —
     * timeout, EOF, garbage — throws without resending.
     *
     * @return array<string, mixed>
     */
    public function roundTrip(string $line): array
    {
        for ($attempt = 1; ; $attempt++) {
            $stream = $this->connection();
            $deadline = \microtime(true) + $this->timeout;
            $error = $this->write($stream, $line, $deadline);
            if ($error === null) {
                break;
            }
            $this->disconnect();
            if ($attempt >= 2) {
                throw new ConnectException("ws2fcgi: cannot write to the control socket {$this->path}: {$error}");
            }
        }
        $reply = $this->readLine($stream, $deadline);
        try {
            $decoded = \json_decode($reply, true, 512, \JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            // A peer that speaks something else: do not trust this connection again.
            $this->disconnect();
            throw new ProtocolException('ws2fcgi: the reply is not JSON: ' . self::excerpt($reply), 0, $e);
        }
        if (!\is_array($decoded) || \array_is_list($decoded) && $decoded !== []) {
            $this->disconnect();
            throw new ProtocolException('ws2fcgi: the reply is not a JSON object: ' . self::excerpt($reply));
        }
        return $decoded;
    }

    /**
     * A usable connection: the current one if it is still open and in step,
     * a new one otherwise.
     *
     * @return resource
     */
    private function connection()
    {
        if ($this->stream !== null && !self::usable($this->stream)) {
            $this->disconnect();
        }
        if ($this->stream === null) {
            $this->stream = $this->connect();
            // A persistent stream may come back from an earlier request of this
            // worker, possibly with an orphaned reply in it: check it too.
            if (!self::usable($this->stream)) {
                $this->disconnect();
                $this->stream = $this->connect();
            }
        }
        return $this->stream;
    }

    /** @return resource */
    private function connect()
    {
        $flags = \STREAM_CLIENT_CONNECT | ($this->persistent ? \STREAM_CLIENT_PERSISTENT : 0);
        $errno = 0;
        $errstr = '';
        $warning = null;
        $stream = self::quietly(
            function () use (&$errno, &$errstr, $flags) {
                return \stream_socket_client('unix://' . $this->path, $errno, $errstr, $this->timeout, $flags);
            },
            $warning,
        );
        if (!\is_resource($stream)) {
            $why = $errstr !== '' ? $errstr : ($warning ?? 'unknown error');
            throw new ConnectException("ws2fcgi: cannot connect to the control socket {$this->path}: {$why}");
        }
        \stream_set_blocking($stream, true);
        return $stream;
    }

    /**
     * An idle connection is usable when it is open and has nothing to read:
     * readable means EOF (the daemon closed it) or an orphaned reply (a
     * previous request was cut short before reading it). Either way the
     * reply stream would be out of step.
     *
     * @param resource $stream
     */
    private static function usable($stream): bool
    {
        if (!\is_resource($stream)) {
            return false; // closed through another Client sharing the persistent stream
        }
        $meta = \stream_get_meta_data($stream);
        if ($meta['eof'] || $meta['unread_bytes'] > 0) {
            return false;
        }
        $read = [$stream];
        $write = $except = null;
        $warning = null;
        $ready = self::quietly(fn () => \stream_select($read, $write, $except, 0, 0), $warning);
        return $ready === 0;
    }

    /**
     * Writes all of $line. Returns null on success, the error text when the
     * connection failed; throws on timeout (the daemon is alive but not
     * reading, so retrying would not help).
     *
     * @param resource $stream
     */
    private function write($stream, string $line, float $deadline): ?string
    {
        $length = \strlen($line);
        $written = 0;
        while ($written < $length) {
            self::setTimeout($stream, $deadline);
            $warning = null;
            $chunk = $written === 0 ? $line : \substr($line, $written);
            $n = self::quietly(fn () => \fwrite($stream, $chunk), $warning);
            if (\is_int($n) && $n > 0) {
                $written += $n;
                continue;
            }
            if (\stream_get_meta_data($stream)['timed_out'] || \microtime(true) >= $deadline) {
                $this->disconnect();
                throw new TimeoutException(\sprintf(
                    'ws2fcgi: timed out after %.3gs writing to the control socket %s',
                    $this->timeout,
                    $this->path,
                ));
            }
            return $warning ?? 'write failed';
        }
        return null;
    }

    /**
     * Reads one reply line (without its "\n"), within the deadline.
     *
     * @param resource $stream
     */
    private function readLine($stream, float $deadline): string
    {
        $line = '';
        while (true) {
            self::setTimeout($stream, $deadline);
            $warning = null;
            $chunk = self::quietly(fn () => \fgets($stream), $warning);
            if (\is_string($chunk) && $chunk !== '') {
                $line .= $chunk;
                if (\str_ends_with($line, "\n")) {
                    return \rtrim($line, "\r\n");
                }
                if (!\feof($stream) && \microtime(true) < $deadline) {
                    continue; // partial line; the rest is on its way
                }
            }
            // Whatever happened, this connection is out of step: a late reply
            // would be read as the answer to the next request.
            $timedOut = !\feof($stream)
                && (\stream_get_meta_data($stream)['timed_out'] || \microtime(true) >= $deadline);
            $this->disconnect();
            if ($timedOut) {
                throw new TimeoutException(\sprintf(
                    'ws2fcgi: timed out after %.3gs waiting for the daemon\'s reply on %s',
                    $this->timeout,
                    $this->path,
                ));
            }
            throw new ProtocolException(
                "ws2fcgi: the daemon closed the control connection {$this->path} before replying"
                . ($line !== '' ? ' (partial reply: ' . self::excerpt($line) . ')' : '')
                . '; the request may or may not have been applied'
                . ($warning !== null ? " ({$warning})" : '')
            );
        }
    }

    /** @param resource $stream */
    private static function setTimeout($stream, float $deadline): void
    {
        $left = \max(0.001, $deadline - \microtime(true));
        $seconds = (int) $left;
        \stream_set_timeout($stream, $seconds, (int) (($left - $seconds) * 1_000_000));
    }

    /**
     * Runs $fn with PHP warnings captured into $warning instead of emitted.
     *
     * @template T
     * @param callable(): T $fn
     * @return T
     */
    private static function quietly(callable $fn, ?string &$warning): mixed
    {
        \set_error_handler(static function (int $no, string $message) use (&$warning): bool {
            $warning = \preg_replace('/^[a-z_]+\(\): /', '', $message);
            return true;
        });
        try {
            return $fn();
        } finally {
            \restore_error_handler();
        }
    }

    private static function excerpt(string $text): string
    {
        $text = \strlen($text) > 200 ? \substr($text, 0, 200) . '...' : $text;
        return \json_encode($text, \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE | \JSON_INVALID_UTF8_SUBSTITUTE) ?: '""';
    }
}
