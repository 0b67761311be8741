<?php

declare(strict_types=1);

namespace Ws2fcgi\Exception;

/**
 * The base of every exception ws2fcgi's PHP package throws at run time.
 *
 * Catch a subclass to branch on what went wrong:
 *
 * - {@see ConnectException}: the daemon could not be reached; nothing was sent.
 * - {@see TimeoutException}: no reply in time; the request may have been applied.
 * - {@see ProtocolException}: the connection broke after the request was sent, or
 *   the reply made no sense; the request may have been applied.
 * - {@see DaemonException}: the daemon refused the request; nothing was applied.
 * - {@see EncodingException}: the request could not be encoded; nothing was sent.
 * - {@see InvalidEventException}: the request is not a ws2fcgi event.
 *
 * Programming errors (a wrong argument type, an invalid channel name given
 * to the response builder) raise \InvalidArgumentException instead.
 *
 * It extends the deprecated {@see \Ws2fcgi\Exception}, so older
 * `catch (Ws2fcgi\Exception $e)` blocks still catch every failure.
 */
abstract class Ws2fcgiException extends \Ws2fcgi\Exception
{
}
