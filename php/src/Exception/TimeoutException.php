<?php

declare(strict_types=1);

namespace Ws2fcgi\Exception;

/**
 * No complete reply within the client's timeout (or the request could not
 * be written within it). The daemon is alive but slow, and it **may have
 * applied the request**: resend only what is idempotent (join, leave, meta,
 * close), not publish or send.
 */
final class TimeoutException extends Ws2fcgiException
{
}
