<?php

declare(strict_types=1);

namespace Ws2fcgi\Exception;

/**
 * The request is not a ws2fcgi event: `WS_EVENT` is missing or names no
 * event this package knows, or a variable the event needs is missing. Seen
 * when a handler script is reached by an ordinary HTTP request.
 */
final class InvalidEventException extends Ws2fcgiException
{
}
