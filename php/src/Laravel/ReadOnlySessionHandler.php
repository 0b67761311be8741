<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

use SessionHandlerInterface;

/**
 * The session as WebSocket events see it: read, never written.
 *
 * A WebSocket event runs beside the user's page requests on the same session;
 * saving it at the end of every event would undo a login or logout made
 * meanwhile, age flash data meant for the next page and record the handshake
 * URI as the "previous URL". So {@see EventKernel} reads the session (the user,
 * its data) and drops every write. Keep per-connection state in ws2fcgi's
 * metadata instead (docs/protocol.md, `X-WS-Meta-*`).
 */
final class ReadOnlySessionHandler implements SessionHandlerInterface
{
    public function __construct(private readonly SessionHandlerInterface $inner)
    {
    }

    public function open(string $path, string $name): bool
    {
        return $this->inner->open($path, $name);
    }

    public function close(): bool
    {
        return $this->inner->close();
    }

    public function read(string $id): string|false
    {
        return $this->inner->read($id);
    }

    public function write(string $id, string $data): bool
    {
        return true;
    }

    public function destroy(string $id): bool
    {
        return true;
    }

    public function gc(int $max_lifetime): int|false
    {
        return 0;
    }
}
