<?php
// The chat's WebSocket handler: ws2fcgi runs this script once per event of
// every connection on /ws, as an ordinary FastCGI request. $_SERVER['WS_EVENT']
// says which event; nothing is kept in PHP between events (what a connection
// needs later is in its metadata, WS_META_*, and the history is in SQLite).
//
//   open     ?room=&nick=   2xx accepts the handshake, 4xx refuses it; the
//                           body is the first message (the welcome)
//   message  {"type":"say","text":"..."}   stored, then published to the room
//            {"type":"backlog","after":41}  the messages after id 41 (a page
//                           that could not catch up from the channel's history)
//   close                   the leave notice for the others
//
// Each event handler returns a Ws2fcgi\Response (status, X-WS-* directives,
// body); the last line sends it. Ws2fcgi\Event is the event ($_SERVER['WS_*']
// and the body).
//
// Lives outside public/: nginx never serves it, only ws2fcgi runs it.

declare(strict_types=1);

require __DIR__ . '/lib/Chat.php';

use Chat\Chat;
use Chat\Rules;
use Ws2fcgi\Event;
use Ws2fcgi\EventKind;
use Ws2fcgi\Exception\InvalidEventException;
use Ws2fcgi\Exception\Ws2fcgiException;
use Ws2fcgi\Response;

try {
    $event = Event::fromGlobals();
    $response = match ($event->kind) {
        EventKind::Open => on_open($event),
        EventKind::Message => on_message($event),
        EventKind::Close => on_close($event),
        default => refuse(400, 'this script answers the raw WebSocket events only'),
    };
} catch (InvalidEventException) {
    $response = refuse(400, 'this script answers ws2fcgi events only');
}
$response->send();

/** Refuses the handshake: the status and this short text reach the client as the HTTP answer. */
function refuse(int $status, string $why): Response
{
    return Response::refuse($status, $why . "\n");
}

/** Answers the sender alone; the connection stays open. */
function reply_error(string $why): Response
{
    return Response::accept(Chat::json(['type' => 'error', 'error' => $why]));
}

function on_open(Event $event): Response
{
    $room = is_string($_GET['room'] ?? null) ? $_GET['room'] : '';
    $nick = Rules::normalizeNick(is_string($_GET['nick'] ?? null) ? $_GET['nick'] : '');
    $owner = Chat::owner($_COOKIE);
    $me = (string) $event->connectionId;
    $ws = new Ws2fcgi\Client(); // the socket comes from $_SERVER['WS_CONTROL_SOCKET']

    try {
        $admission = Chat::admission($ws, $room, $nick, $owner);
    } catch (Ws2fcgiException $e) {
        error_log('chat: presence failed: ' . $e->getMessage());
        return refuse(503, 'the chat is unavailable, try again');
    }
    if ($admission['error'] !== null) {
        return refuse($admission['status'], $admission['error']);
    }

    $channel = Chat::channel($room);
    $people = Chat::peopleChannel($room);

    // Same nickname, same browser: a reload or another tab takes over.
    foreach ($admission['replace'] as $old) {
        $ws->close($old, 4001, 'this nickname was opened in another window');
    }

    try {
        $join = ['type' => 'join', 'id' => $me, 'nick' => $nick, 'ts' => Chat::nowMs()];
        $ws->publish($people, Chat::json($join), except: $me); // the welcome tells this one
    } catch (Ws2fcgiException $e) {
        error_log('chat: join notice not sent: ' . $e->getMessage());
    }

    $members = [['id' => $me, 'nick' => $nick]];
    foreach ($admission['members'] as $member) {
        if (!in_array($member['id'], $admission['replace'], true)) {
            $members[] = ['id' => $member['id'], 'nick' => $member['nick']];
        }
    }
    // No messages here: the page has those it rendered, the channel's history
    // sends what a reconnecting page missed, and a page that could not catch
    // up asks for the rest ("backlog") once it is in the channel, so that
    // nothing published between a read here and the join is missed.
    $welcome = Response::accept(Chat::json([
        'type' => 'welcome',
        'room' => $room,
        'you' => ['id' => $me, 'nick' => $nick],
        'members' => $members,
    ]));

    // Directives: remembered by ws2fcgi, seen as WS_META_NICK/ROOM on later
    // events and in presence replies. ws2fcgi applies them before the welcome
    // is sent.
    $welcome = $welcome
        ->meta('Nick', $nick) // safe in a header: Rules allows ASCII only
        ->meta('Room', $room)
        ->join($channel, $people);
    return $owner !== '' ? $welcome->meta('Owner', $owner) : $welcome;
}

function on_message(Event $event): Response
{
    $nick = $event->meta('nick') ?? '';
    $room = $event->meta('room') ?? '';
    if ($nick === '' || $room === '') {
        // Cannot happen for a connection on_open accepted.
        return Response::accept()->close(1011, 'no chat session');
    }
    if ($event->isBinary()) {
        return reply_error('send text messages, not binary');
    }
    // One byte over the limit is enough to know it is too large.
    $raw = substr($event->body, 0, Rules::MAX_RAW_BYTES + 1);
    $after = Rules::parseBacklog($raw);
    if ($after !== null) {
        return reply_backlog($room, $after);
    }
    [$text, $problem] = Rules::parseSay($raw);
    if ($problem !== null) {
        return reply_error($problem);
    }

    try {
        $message = Chat::history()->add($room, $nick, $text, Chat::nowMs());
    } catch (RuntimeException $e) { // PDOException included
        error_log('chat: message not stored: ' . $e->getMessage());
        return reply_error('the message could not be saved, try again');
    }
    try {
        // To the whole room, the sender included: everyone sees one order.
        (new Ws2fcgi\Client())->publish(Chat::channel($room), Chat::json(['type' => 'message'] + $message));
    } catch (Ws2fcgiException $e) {
        error_log('chat: message not published: ' . $e->getMessage());
        return reply_error('saved, but not delivered live; the others see it when they reload');
    }
    return Response::accept();
}

/**
 * The messages after id $after, to the sender alone. The page asks once it
 * is in the room's channel, so what this misses arrives live; a message in
 * both is shown once (chat.js keys messages by id).
 */
function reply_backlog(string $room, int $after): Response
{
    try {
        $backlog = Chat::history()->after($room, $after);
    } catch (RuntimeException $e) { // PDOException included
        error_log('chat: backlog unavailable: ' . $e->getMessage());
        return reply_error('the history could not be read; reload the page to see what you missed');
    }
    return Response::accept(Chat::json(['type' => 'backlog'] + $backlog));
}

/** The connection is gone: the answer is discarded, the leave notice is what counts. */
function on_close(Event $event): Response
{
    $nick = $event->meta('nick') ?? '';
    $room = $event->meta('room') ?? '';
    if ($nick === '' || $room === '') {
        return Response::accept();
    }
    // ws2fcgi has already taken this connection out of the room.
    $leave = ['type' => 'leave', 'id' => $event->connectionId, 'nick' => $nick, 'ts' => Chat::nowMs()];
    try {
        (new Ws2fcgi\Client())->publish(Chat::peopleChannel($room), Chat::json($leave));
    } catch (Ws2fcgiException $e) {
        error_log('chat: leave notice not sent: ' . $e->getMessage());
    }
    return Response::accept();
}
