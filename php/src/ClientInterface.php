<?php

declare(strict_types=1);

namespace Ws2fcgi;

use Ws2fcgi\Exception\Ws2fcgiException;

/**
 * What PHP code can ask of the ws2fcgi daemon through its control socket:
 * push to connections and channels, change a connection's channels and
 * metadata, close it, read presence and history, publish Pusher events.
 *
 * {@see Client} implements it over the Unix socket; type your services
 * against this interface so tests can replace it with a mock.
 *
 * Naming a connection that is gone is never an error (PHP races with
 * disconnects): counts are 0 and the bool results false. Every method
 * throws a {@see Ws2fcgiException} subclass when the request failed.
 */
interface ClientInterface
{
    /**
     * Sends $data to every member of $channel, but those in $except.
     *
     * @param string|list<string>|null $except connection id(s) to skip, typically the sender's
     * @param bool                     $binary a binary WebSocket message; otherwise $data must be UTF-8
     *
     * @return int how many connections of this node it was queued to
     *
     * @throws Ws2fcgiException
     */
    public function publish(string $channel, string $data, string|array|null $except = null, bool $binary = false): int;

    /**
     * Sends $data to one connection or a list of connections.
     *
     * @param string|list<string> $to
     *
     * @return int how many distinct open connections it was queued to
     *
     * @throws Ws2fcgiException
     */
    public function send(string|array $to, string $data, bool $binary = false): int;

    /**
     * Adds connection $conn to $channel.
     *
     * @return bool whether the connection was found open
     *
     * @throws Ws2fcgiException
     */
    public function join(string $conn, string $channel): bool;

    /**
     * Removes connection $conn from $channel.
     *
     * @return bool whether the connection was found open
     *
     * @throws Ws2fcgiException
     */
    public function leave(string $conn, string $channel): bool;

    /**
     * Closes connection $conn with a close frame (code 1000-1003, 1007-1014 or 3000-4999).
     *
     * @return bool whether the connection was open and now closes
     *
     * @throws Ws2fcgiException
     */
    public function close(string $conn, int $code = 1000, string $reason = ''): bool;

    /**
     * Sets (string, number, Stringable) or deletes (null) metadata entries of $conn.
     *
     * @param array<string, string|int|float|\Stringable|null> $set
     *
     * @return bool whether the connection was found open
     *
     * @throws Ws2fcgiException
     */
    public function meta(string $conn, array $set): bool;

    /**
     * The members of $channel and their metadata.
     *
     * @return list<array{id: string, meta: array<string, string>}>
     *
     * @throws Ws2fcgiException
     */
    public function presence(string $channel): array;

    /**
     * The channel's kept publications: the newest $limit, or those after $since.
     *
     * @param array{offset: int, epoch: string}|null $since
     *
     * @return array{epoch: string, offset: int, lost: bool,
     *               publications: list<array{offset: int, data: string, binary: bool}>}
     *
     * @throws Ws2fcgiException
     */
    public function history(string $channel, int $limit = 100, ?array $since = null): array;

    /**
     * Publishes Pusher event $event to channels of Pusher app $app, leaving out
     * the connection with Pusher socket id $socketId (the sender's).
     *
     * @param string|list<string> $channels
     * @param mixed               $data     a string as is, anything else JSON-encoded
     *
     * @return int how many connections of this node it was queued to
     *
     * @throws Ws2fcgiException
     */
    public function pusherPublish(string $app, string|array $channels, string $event, mixed $data, ?string $socketId = null): int;

    /**
     * This node's counters.
     *
     * @return array<string, mixed>
     *
     * @throws Ws2fcgiException
     */
    public function stats(): array;
}
