<?php

declare(strict_types=1);

namespace Ws2fcgi;

use Ws2fcgi\Exception\ConnectException;
use Ws2fcgi\Exception\DaemonException;
use Ws2fcgi\Exception\EncodingException;
use Ws2fcgi\Exception\ProtocolException;
use Ws2fcgi\Exception\Ws2fcgiException;

/**
 * Client of the ws2fcgi control socket.
 *
 * ws2fcgi turns every WebSocket event into a FastCGI request to PHP-FPM; this
 * class lets PHP code push messages, manage channel membership, set connection
 * metadata and close connections at any time — from an event handler or from
 * any other PHP code that can reach the socket (a web page, a cron job, a
 * queue worker).
 *
 * The protocol is newline-delimited JSON over a Unix stream socket: one
 * request line, one reply line, replies in request order.
 *
 * Usage, inside a WebSocket message handler:
 *
 *     $ws  = new Ws2fcgi\Client();   // socket from $_SERVER['WS_CONTROL_SOCKET']
 *     $msg = file_get_contents('php://input');
 *     $ws->publish('room', $msg, except: $_SERVER['WS_CONNECTION_ID']);
 *
 * Elsewhere (no WS_CONTROL_SOCKET in the environment), name the socket:
 *
 *     $ws = new Ws2fcgi\Client('/run/ws2fcgi/control.sock');
 *     $ws->send($connId, json_encode(['type' => 'ping']));
 *
 * The connection is opened lazily on the first call. By default it is a
 * persistent stream, so each php-fpm worker keeps one connection to the
 * daemon across requests. A connection found closed or out of step before a
 * request is written (the daemon restarted, an earlier request was aborted
 * before reading its reply) is replaced silently; a write that fails is
 * retried once on a fresh connection. A request whose line was written in
 * full is never resent, so no request is ever applied twice by the client's
 * doing.
 *
 * Every method throws a subclass of Ws2fcgi\Exception\Ws2fcgiException on
 * failure: ConnectException (nothing sent), TimeoutException and
 * ProtocolException (the request may have been applied), DaemonException
 * (refused, nothing applied), EncodingException (nothing sent).
 *
 * Type against {@see ClientInterface} to mock it in tests.
 */
final class Client implements ClientInterface
{
    /** Flags for every request line. */
    private const JSON_FLAGS = \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE | \JSON_THROW_ON_ERROR;

    /** The socket connection: lines out, replies back, reconnects and the retry rule. */
    private ControlConnection $connection;

    /**
     * @param string|null $socket     path of the control socket, `unix://` prefix optional;
     *                                null takes $_SERVER['WS_CONTROL_SOCKET'], then
     *                                getenv('WS_CONTROL_SOCKET')
     * @param float       $timeout    seconds allowed to connect, and to write a request and read its reply
     * @param bool        $persistent keep the connection open across requests of the same
     *                                php-fpm worker (STREAM_CLIENT_PERSISTENT)
     *
     * @throws ConnectException when no socket is given and WS_CONTROL_SOCKET is not set
     * @throws \InvalidArgumentException when $timeout is not positive
     */
    public function __construct(?string $socket = null, float $timeout = 5.0, bool $persistent = true)
    {
        if ($socket === null || $socket === '') {
            $socket = self::socketFromEnvironment();
        }
        if (\str_starts_with($socket, 'unix://')) {
            $socket = \substr($socket, \strlen('unix://'));
        }
        if ($socket === '') {
            throw new ConnectException('ws2fcgi: the control socket path is empty');
        }
        if (!($timeout > 0.0) || !\is_finite($timeout)) {
            throw new \InvalidArgumentException('ws2fcgi: timeout must be a positive number of seconds');
        }
        $this->connection = new ControlConnection($socket, $timeout, $persistent);
    }

    /**
     * The control socket's filesystem path this client talks to.
     */
    public function socketPath(): string
    {
        return $this->connection->path;
    }

    /**
     * Sends $data to every member of $channel.
     *
     * JSON: {"op":"publish","channel":..,"data":..,"except":..}; "except" is
     * omitted when null, and "binary":true is added (with $data base64-encoded)
     * when $binary is true.
     *
     * @param string                   $channel channel name
     * @param string                   $data    the message; must be UTF-8 unless $binary
     * @param string|list<string>|null $except  connection id(s) to skip, typically the sender's
     *                                          $_SERVER['WS_CONNECTION_ID']
     * @param bool                     $binary  send a binary WebSocket message instead of text
     *
     * @return int how many connections the message was queued to ("delivered")
     *
     * @throws Ws2fcgiException
     */
    public function publish(string $channel, string $data, string|array|null $except = null, bool $binary = false): int
    {
        $req = ['op' => 'publish', 'channel' => $channel, 'data' => $binary ? \base64_encode($data) : $data];
        if ($except !== null) {
            $req['except'] = \is_array($except) ? self::idList($except, 'except') : $except;
        }
        if ($binary) {
            $req['binary'] = true;
        }
        return self::int($this->request($req), 'delivered');
    }

    /**
     * Sends $data to one connection or to a list of connections.
     *
     * JSON: {"op":"send","to":..,"data":..} (+ "binary":true, base64 data).
     *
     * @param string|list<string> $to     connection id or list of ids
     * @param string              $data   the message; must be UTF-8 unless $binary
     * @param bool                $binary send a binary WebSocket message instead of text
     *
     * @return int how many connections the message was queued to ("delivered");
     *             ids that are no longer connected are not counted
     *
     * @throws Ws2fcgiException
     */
    public function send(string|array $to, string $data, bool $binary = false): int
    {
        $req = [
            'op' => 'send',
            'to' => \is_array($to) ? self::idList($to, 'to') : $to,
            'data' => $binary ? \base64_encode($data) : $data,
        ];
        if ($binary) {
            $req['binary'] = true;
        }
        return self::int($this->request($req), 'delivered');
    }

    /**
     * Adds connection $conn to $channel.
     *
     * JSON: {"op":"join","conn":..,"channel":..}
     *
     * @return bool true when the connection is open ("found"; also when it
     *              already was in the channel), false when it is gone or unknown
     *
     * @throws Ws2fcgiException
     */
    public function join(string $conn, string $channel): bool
    {
        return self::found($this->request(['op' => 'join', 'conn' => $conn, 'channel' => $channel]));
    }

    /**
     * Removes connection $conn from $channel.
     *
     * JSON: {"op":"leave","conn":..,"channel":..}
     *
     * @return bool true when the connection is open ("found"; also when it
     *              was not in the channel), false when it is gone or unknown
     *
     * @throws Ws2fcgiException
     */
    public function leave(string $conn, string $channel): bool
    {
        return self::found($this->request(['op' => 'leave', 'conn' => $conn, 'channel' => $channel]));
    }

    /**
     * Closes connection $conn with a WebSocket close frame.
     *
     * JSON: {"op":"close","conn":..,"code":..,"reason":..}
     *
     * @param int    $code   WebSocket close code (1000, or 3000-4999 for application codes)
     * @param string $reason close reason (at most 123 bytes of UTF-8 on the wire)
     *
     * @return bool true when the connection existed and is being closed ("closed")
     *
     * @throws Ws2fcgiException
     */
    public function close(string $conn, int $code = 1000, string $reason = ''): bool
    {
        $reply = $this->request(['op' => 'close', 'conn' => $conn, 'code' => $code, 'reason' => $reason]);
        return (bool) ($reply['closed'] ?? false);
    }

    /**
     * Sets or deletes metadata of connection $conn.
     *
     * Later events of that connection see each key as $_SERVER['WS_META_<KEY>'],
     * and presence() lists it. A null value deletes the key; other values are
     * sent as strings (ints, floats and Stringable objects are converted).
     *
     * JSON: {"op":"meta","conn":..,"set":{"user":"42","typing":null}}
     *
     * @param array<string, string|int|float|\Stringable|null> $set
     *
     * @return bool true when the connection is open ("found"), false when it
     *              is gone or unknown (nothing was stored)
     *
     * @throws Ws2fcgiException
     * @throws \InvalidArgumentException on a value that is not a string, number, Stringable or null
     */
    public function meta(string $conn, array $set): bool
    {
        $values = [];
        foreach ($set as $key => $value) {
            if ($value === null || \is_string($value)) {
                $values[(string) $key] = $value;
            } elseif (\is_int($value) || \is_float($value) || $value instanceof \Stringable) {
                $values[(string) $key] = (string) $value;
            } else {
                throw new \InvalidArgumentException(\sprintf(
                    'ws2fcgi: meta value of "%s" must be a string or null, %s given',
                    $key,
                    \get_debug_type($value),
                ));
            }
        }
        // (object): an empty set must still be a JSON object, never [].
        return self::found($this->request(['op' => 'meta', 'conn' => $conn, 'set' => (object) $values]));
    }

    /**
     * Lists the members of $channel.
     *
     * JSON: {"op":"presence","channel":..}
     *
     * @return list<array{id: string, meta: array<string, string>}> one entry per
     *         member connection: its id and its metadata
     *
     * @throws Ws2fcgiException
     */
    public function presence(string $channel): array
    {
        $reply = $this->request(['op' => 'presence', 'channel' => $channel]);
        $members = $reply['members'] ?? [];
        if (!\is_array($members)) {
            throw new ProtocolException('ws2fcgi: malformed presence reply: "members" is not a list', 0, null, $reply);
        }
        $list = [];
        foreach ($members as $member) {
            if (!\is_array($member) || !isset($member['id'])) {
                throw new ProtocolException('ws2fcgi: malformed presence reply: a member has no "id"', 0, null, $reply);
            }
            $meta = $member['meta'] ?? [];
            $list[] = ['id' => (string) $member['id'], 'meta' => \is_array($meta) ? $meta : []] + $member;
        }
        return $list;
    }

    /**
     * The channel's history ([history] in the daemon's config): the newest
     * $limit publications, or, with $since, at most $limit of those after
     * that position, oldest first. Renders a page's last messages without a
     * database.
     *
     * JSON: {"op":"history","channel":..,"limit":..,"since":{"offset":..,"epoch":..}}
     *
     * @param array{offset: int, epoch: string}|null $since a position, as a
     *        publication or a previous history() gave it
     *
     * @return array{epoch: string, offset: int, lost: bool,
     *               publications: list<array{offset: int, data: string, binary: bool}>}
     *         where the channel stands (epoch, offset of its last publication);
     *         lost is true when $since is no longer covered (or names another
     *         epoch): reload from your own storage. Binary data is decoded.
     *
     * @throws Ws2fcgiException also when the channel keeps no history
     */
    public function history(string $channel, int $limit = 100, ?array $since = null): array
    {
        $req = ['op' => 'history', 'channel' => $channel, 'limit' => $limit];
        if ($since !== null) {
            $req['since'] = ['offset' => (int) ($since['offset'] ?? 0), 'epoch' => (string) ($since['epoch'] ?? '')];
        }
        $reply = $this->request($req);
        $list = $reply['publications'] ?? null;
        if (!\is_array($list) || !isset($reply['epoch'], $reply['offset'])) {
            throw new ProtocolException('ws2fcgi: malformed history reply', 0, null, $reply);
        }
        $publications = [];
        foreach ($list as $p) {
            if (!\is_array($p) || !isset($p['offset'], $p['data'])) {
                throw new ProtocolException('ws2fcgi: malformed history reply: a publication has no offset or data', 0, null, $reply);
            }
            $binary = ($p['binary'] ?? false) === true;
            $data = $binary ? \base64_decode((string) $p['data'], true) : (string) $p['data'];
            if ($data === false) {
                throw new ProtocolException('ws2fcgi: malformed history reply: invalid base64', 0, null, $reply);
            }
            $publications[] = ['offset' => (int) $p['offset'], 'data' => $data, 'binary' => $binary];
        }
        return [
            'epoch' => (string) $reply['epoch'],
            'offset' => (int) $reply['offset'],
            'lost' => ($reply['lost'] ?? false) === true,
            'publications' => $publications,
        ];
    }

    /**
     * Publishes a Pusher event to channels of a Pusher app ([[pusher.app]] in
     * the daemon's config), as Pusher's HTTP API would, without HTTP or
     * signing: pusher-js clients subscribed to them receive it.
     *
     * JSON: {"op":"pusher_publish","app":..,"channels":[..],"event":..,"data":..,"socket_id":..}
     *
     * @param string              $app      the app's id
     * @param string|list<string> $channels Pusher channel names (or "#server-to-user-<id>")
     * @param string              $event    the event name
     * @param mixed               $data     a string is sent as is; anything else is
     *                                      JSON-encoded first, as Pusher's SDKs do
     * @param string|null         $socketId a Pusher socket_id to leave out (the sender's)
     *
     * @return int how many connections of this node it was queued to ("delivered")
     *
     * @throws Ws2fcgiException also when the daemon refuses it (unknown app, bad
     *                   channel name, data over pusher.max_message_bytes, ...)
     */
    public function pusherPublish(string $app, string|array $channels, string $event, mixed $data, ?string $socketId = null): int
    {
        if (!\is_string($data)) {
            try {
                $data = \json_encode($data, self::JSON_FLAGS);
            } catch (\JsonException $e) {
                throw new EncodingException('ws2fcgi: cannot encode the event data: ' . $e->getMessage(), 0, $e);
            }
        }
        $req = [
            'op' => 'pusher_publish',
            'app' => $app,
            'channels' => \is_array($channels) ? self::stringList($channels, 'channels') : [$channels],
            'event' => $event,
            'data' => $data,
        ];
        if ($socketId !== null) {
            $req['socket_id'] = $socketId;
        }
        return self::int($this->request($req), 'delivered');
    }

    /**
     * The daemon's counters (connections, channels, ...), exactly as it
     * reports them.
     *
     * JSON: {"op":"stats"}
     *
     * @return array<string, mixed> the reply without its "ok" key
     *
     * @throws Ws2fcgiException
     */
    public function stats(): array
    {
        $reply = $this->request(['op' => 'stats']);
        unset($reply['ok']);
        return $reply;
    }

    /**
     * Sends one raw request and returns the daemon's decoded reply, "ok" included.
     *
     * Use it for operations this class has no method for. $req is encoded as
     * is: base64-encode binary data yourself.
     *
     * @param array<string, mixed> $req e.g. ['op' => 'stats']
     *
     * @return array<string, mixed>
     *
     * @throws Ws2fcgiException on any failure, including a {"ok":false,"error":...} reply
     *                   (the message is the daemon's error; the connection stays usable)
     */
    public function request(array $req): array
    {
        try {
            $line = \json_encode($req, self::JSON_FLAGS) . "\n";
        } catch (\JsonException $e) {
            $hint = $e->getCode() === \JSON_ERROR_UTF8 ? ' (pass binary: true for data that is not UTF-8)' : '';
            throw new EncodingException('ws2fcgi: cannot encode the request: ' . $e->getMessage() . $hint, 0, $e);
        }
        $reply = $this->connection->roundTrip($line);
        if (($reply['ok'] ?? null) === true) {
            return $reply;
        }
        if (($reply['ok'] ?? null) === false) {
            $error = $reply['error'] ?? null;
            $message = \is_string($error) && $error !== ''
                ? $error
                : 'ws2fcgi: the daemon refused the request without an error message';
            throw new DaemonException($message, $reply);
        }
        throw new ProtocolException('ws2fcgi: malformed reply (no boolean "ok")', 0, null, $reply);
    }

    /**
     * Closes the connection to the daemon, persistent or not. The next call
     * opens a new one. Rarely needed: php-fpm keeps persistent connections
     * for reuse, and PHP closes non-persistent ones at the end of the request.
     */
    public function disconnect(): void
    {
        $this->connection->disconnect();
    }

    // ---------------------------------------------------------------- internals

    private static function socketFromEnvironment(): string
    {
        $socket = $_SERVER['WS_CONTROL_SOCKET'] ?? null;
        if (!\is_string($socket) || $socket === '') {
            $socket = \getenv('WS_CONTROL_SOCKET');
        }
        if (!\is_string($socket) || $socket === '') {
            throw new ConnectException(
                'ws2fcgi: no control socket: pass its path to new Ws2fcgi\Client(...) or set WS_CONTROL_SOCKET '
                . '(ws2fcgi sets it on every event when [control] socket is configured)'
            );
        }
        return $socket;
    }

    /**
     * @param array<mixed> $items
     *
     * @return list<string>
     */
    private static function stringList(array $items, string $what): array
    {
        $list = [];
        foreach ($items as $item) {
            if (!\is_string($item)) {
                throw new \InvalidArgumentException(\sprintf(
                    'ws2fcgi: "%s" must be strings, %s given',
                    $what,
                    \get_debug_type($item),
                ));
            }
            $list[] = $item;
        }
        return $list;
    }

    /**
     * @param array<mixed> $ids
     * @return list<string>
     */
    private static function idList(array $ids, string $what): array
    {
        $list = [];
        foreach ($ids as $id) {
            if (!\is_string($id) && !\is_int($id)) {
                throw new \InvalidArgumentException(\sprintf(
                    'ws2fcgi: "%s" must list connection ids as strings, %s given',
                    $what,
                    \get_debug_type($id),
                ));
            }
            $list[] = (string) $id;
        }
        return $list;
    }

    /** @param array<string, mixed> $reply */
    private static function found(array $reply): bool
    {
        return ($reply['found'] ?? false) === true;
    }

    /** @param array<string, mixed> $reply */
    private static function int(array $reply, string $key): int
    {
        $value = $reply[$key] ?? 0;
        return \is_int($value) ? $value : (int) $value;
    }
}
