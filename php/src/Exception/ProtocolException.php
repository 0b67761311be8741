<?php

declare(strict_types=1);

namespace Ws2fcgi\Exception;

/**
 * The request was written in full but no usable reply came back: the daemon
 * closed the connection before replying, or the reply was not the JSON
 * object the protocol promises (getReply() holds a decoded one). The request
 * **may have been applied**; the connection has been dropped.
 */
final class ProtocolException extends Ws2fcgiException
{
}
