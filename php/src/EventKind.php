<?php

declare(strict_types=1);

namespace Ws2fcgi;

/**
 * What happened: the value of `WS_EVENT`.
 *
 * The raw WebSocket contract has open, message and close; a Pusher app with a
 * `script` also sends subscribe and client_event (of a connection) and
 * Pusher's webhooks as events of a channel: member_added, member_removed,
 * channel_occupied, channel_vacated. See docs/protocol.md.
 */
enum EventKind: string
{
    case Open = 'open';
    case Message = 'message';
    case Close = 'close';
    case Subscribe = 'subscribe';
    case ClientEvent = 'client_event';
    case MemberAdded = 'member_added';
    case MemberRemoved = 'member_removed';
    case ChannelOccupied = 'channel_occupied';
    case ChannelVacated = 'channel_vacated';

    /**
     * Whether PHP's answer is used: open (accept or refuse), message (reply,
     * directives), subscribe (authorize) and client_event (relay or drop).
     * The answers to the others are discarded.
     */
    public function expectsAnswer(): bool
    {
        return match ($this) {
            self::Open, self::Message, self::Subscribe, self::ClientEvent => true,
            default => false,
        };
    }

    /** Whether the event belongs to a channel, not to a connection (Pusher's webhooks). */
    public function isChannelEvent(): bool
    {
        return match ($this) {
            self::MemberAdded, self::MemberRemoved, self::ChannelOccupied, self::ChannelVacated => true,
            default => false,
        };
    }
}
