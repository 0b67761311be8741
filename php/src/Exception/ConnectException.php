<?php

declare(strict_types=1);

namespace Ws2fcgi\Exception;

/**
 * The control socket could not be reached: none is configured, the daemon is
 * not running, the path is wrong, permissions refuse it, or the request could
 * not be written (twice). The request was not applied; retrying later is safe.
 */
final class ConnectException extends Ws2fcgiException
{
}
