<?php

use Illuminate\Support\Facades\Broadcast;

// A room's presence channel (presence-room.<name>): its members, as the
// people list shows them. Anyone else is refused.
Broadcast::channel('room.{room}', function ($user, string $room) {
    return in_array($room, $user->rooms, true) ? ['id' => $user->id, 'name' => $user->name] : false;
});

// Each person's private channel (private-user.<id>): their nudges.
Broadcast::channel('user.{id}', function ($user, string $id) {
    return (int) $user->id === (int) $id;
});
