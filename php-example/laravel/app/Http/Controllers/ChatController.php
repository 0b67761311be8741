<?php

declare(strict_types=1);

namespace App\Http\Controllers;

use App\Events\MessagePosted;
use App\Events\Nudged;
use Illuminate\Http\Request;

/**
 * The rooms: a page per room, and the two requests that broadcast().
 */
final class ChatController
{
    public function show(Request $request, string $room)
    {
        $user = $request->user();
        abort_unless(in_array($room, $user->rooms, true), 403, 'You are not a member of this room.');

        return view('room', [
            'room' => $room,
            'me' => ['id' => $user->id, 'name' => $user->name],
            'rooms' => $user->rooms,
            'people' => collect(config('chat.users'))->map(fn ($u, $id) => ['id' => $id, 'name' => $u['name']])->values(),
            'pusher' => ['key' => config('ws2fcgi.pusher.key'), 'auth' => config('chat.channel_auth') === 'php' ? 'php' : 'endpoint'],
        ]);
    }

    /** A message to the room's other members: the sender shows it from this answer. */
    public function post(Request $request, string $room)
    {
        $user = $request->user();
        abort_unless(in_array($room, $user->rooms, true), 403, 'You are not a member of this room.');
        $text = trim((string) $request->input('text'));
        abort_if($text === '' || mb_strlen($text) > (int) config('chat.max_message_length'), 422, 'A message is 1 to ' . config('chat.max_message_length') . ' characters.');

        $event = new MessagePosted(['id' => $user->id, 'name' => $user->name], $room, $text, now()->toIso8601String());
        broadcast($event)->toOthers();

        return response()->json($event->broadcastWith());
    }

    /** A nudge to one person, on their private channel. */
    public function nudge(Request $request, int $id)
    {
        abort_unless(array_key_exists($id, config('chat.users')), 404);
        $user = $request->user();
        broadcast(new Nudged(['id' => $user->id, 'name' => $user->name], $id));

        return response()->json(['nudged' => $id]);
    }
}
