<?php

declare(strict_types=1);

namespace Ws2fcgi\Exception;

/**
 * The request could not be encoded as JSON, most often text data that is not
 * UTF-8 (pass `binary: true` for bytes). Nothing was sent.
 */
final class EncodingException extends Ws2fcgiException
{
}
