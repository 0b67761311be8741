<?php

declare(strict_types=1);

namespace App\Events;

use Illuminate\Broadcasting\PrivateChannel;
use Illuminate\Contracts\Broadcasting\ShouldBroadcastNow;

/**
 * One person nudges another, on the other's private channel, under the name
 * `nudge` (broadcastAs): Echo listens with `.listen('.nudge', ...)`.
 */
class Nudged implements ShouldBroadcastNow
{
    public function __construct(public readonly array $from, public readonly int $to)
    {
    }

    public function broadcastOn()
    {
        return new PrivateChannel('user.' . $this->to);
    }

    public function broadcastAs()
    {
        return 'nudge';
    }

    public function broadcastWith()
    {
        return ['from' => $this->from];
    }
}
