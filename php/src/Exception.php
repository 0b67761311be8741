<?php

declare(strict_types=1);

namespace Ws2fcgi;

/**
 * The client's single exception class before 0.1.0 split it by failure kind,
 * kept so that `catch (Ws2fcgi\Exception $e)` keeps catching everything.
 *
 * Every exception the package throws extends it through
 * {@see Exception\Ws2fcgiException}; nothing throws this class itself.
 *
 * @deprecated catch {@see Exception\Ws2fcgiException} or one of its subclasses;
 *             this class goes in the next major version
 */
class Exception extends \RuntimeException
{
    /** @var array<string, mixed>|null */
    private ?array $reply;

    /**
     * @param array<string, mixed>|null $reply the daemon's decoded reply, when it refused the request
     */
    public function __construct(string $message = '', int $code = 0, ?\Throwable $previous = null, ?array $reply = null)
    {
        parent::__construct($message, $code, $previous);
        $this->reply = $reply;
    }

    /**
     * The daemon's decoded reply when there was one: the `{"ok":false,...}`
     * of a refusal, or a reply the client could not make sense of; null when
     * the failure happened before a reply was read.
     *
     * @return array<string, mixed>|null
     */
    public function getReply(): ?array
    {
        return $this->reply;
    }
}
