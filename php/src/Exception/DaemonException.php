<?php

declare(strict_types=1);

namespace Ws2fcgi\Exception;

/**
 * The daemon refused the request with `{"ok":false,"error":"..."}` (an
 * unknown Pusher app, a bad channel name, an invalid close code, more than 64
 * metadata entries, ...). Nothing was applied and the connection stays
 * usable.
 *
 * getMessage() and getDaemonError() are the daemon's `error` text verbatim;
 * the protocol has no numeric error codes (getCode() is 0), so match on the
 * exception class, not on the text. getReply() is the whole decoded reply.
 */
final class DaemonException extends Ws2fcgiException
{
    /**
     * @param array<string, mixed> $reply the daemon's decoded reply
     */
    public function __construct(private readonly string $daemonError, array $reply)
    {
        parent::__construct($daemonError, 0, null, $reply);
    }

    /** The daemon's `error` string (a fallback text when it sent none). */
    public function getDaemonError(): string
    {
        return $this->daemonError;
    }
}
