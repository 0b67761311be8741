<?php

declare(strict_types=1);

namespace App\Events;

use Illuminate\Broadcasting\InteractsWithSockets;
use Illuminate\Broadcasting\PresenceChannel;
use Illuminate\Contracts\Broadcasting\ShouldBroadcastNow;

/**
 * A message in a room, to the room's presence channel. Echo listens for it by
 * its class name: `.listen('MessagePosted', ...)`.
 */
class MessagePosted implements ShouldBroadcastNow
{
    use InteractsWithSockets;

    public function __construct(
        public readonly array $user,
        public readonly string $room,
        public readonly string $text,
        public readonly string $at,
    ) {
    }

    public function broadcastOn()
    {
        return new PresenceChannel('room.' . $this->room);
    }

    public function broadcastWith()
    {
        return ['user' => $this->user, 'text' => $this->text, 'at' => $this->at];
    }
}
