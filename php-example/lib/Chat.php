<?php
// What the entry points share: settings, the channel of a room, the browser's
// owner token, the admission check, and the JSON the clients receive.
//
// Entry points: ../ws.php (every WebSocket event), public/index.php (the
// page), public/check.php (why a handshake was refused).

declare(strict_types=1);

namespace Chat;

require_once __DIR__ . '/Rules.php';
require_once __DIR__ . '/History.php';
// ws2fcgi's PHP package straight from the repository (Ws2fcgi.php autoloads
// php/src/); an application would `composer require ws2fcgi/ws2fcgi`.
require_once __DIR__ . '/../../php/Ws2fcgi.php';

final class Chat
{
    /** Cookie holding a random per-browser token (see owner()). */
    public const OWNER_COOKIE = 'chat_sid';

    /**
     * A setting from the FastCGI params ($_SERVER: fastcgi_param in nginx)
     * or the environment (the managed php-fpm inherits ws2fcgi's).
     */
    public static function setting(string $name, string $default = ''): string
    {
        $value = $_SERVER[$name] ?? getenv($name);
        return is_string($value) && $value !== '' ? $value : $default;
    }

    /** The history database: WS_CHAT_DB, else run/chat/chat.sqlite in the repository. */
    public static function history(): History
    {
        return History::open(self::setting('WS_CHAT_DB', dirname(__DIR__, 2) . '/run/chat/chat.sqlite'));
    }

    /**
     * The ws2fcgi channel of a room's messages; the prefix keeps rooms apart
     * from other channels. It keeps history (scripts/chat: `[[history.channel]]
     * pattern = "room:*"`), so a page that reconnects is sent what it missed.
     */
    public static function channel(string $room): string
    {
        return 'room:' . $room;
    }

    /**
     * The channel of a room's join and leave notices: live only, no history.
     * They are not worth catching up on (the welcome lists who is here now),
     * and a replayed "join" of someone gone since would be a lie.
     */
    public static function peopleChannel(string $room): string
    {
        return 'people:' . $room;
    }

    /**
     * Who this browser is, for "is that nickname mine?": a hash of the
     * random cookie index.php sets, or '' without one. Only the hash is kept
     * in connection metadata, so the token itself is never shared.
     *
     * @param array<string, mixed> $cookies $_COOKIE
     */
    public static function owner(array $cookies): string
    {
        $token = $cookies[self::OWNER_COOKIE] ?? '';
        return is_string($token) && preg_match('/^[0-9a-f]{32}$/D', $token)
            ? hash('sha256', $token)
            : '';
    }

    /**
     * Makes sure the browser has an owner token; call before any output.
     *
     * @param array<string, mixed> $cookies $_COOKIE
     */
    public static function ensureOwnerCookie(array $cookies): void
    {
        if (self::owner($cookies) !== '') {
            return;
        }
        setcookie(self::OWNER_COOKIE, bin2hex(random_bytes(16)), [
            'path' => '/',
            'httponly' => true,
            'samesite' => 'Lax',
            'secure' => ($_SERVER['HTTPS'] ?? '') === 'on',
        ]);
    }

    /**
     * Members of a room, from ws2fcgi's presence reply (each connection's metadata).
     *
     * @param list<array{id: string, meta: array<string, string>}> $presence
     * @return list<array{id: string, nick: string, owner: string}>
     */
    public static function members(array $presence): array
    {
        $members = [];
        foreach ($presence as $member) {
            $nick = $member['meta']['nick'] ?? '';
            if ($nick !== '') {
                $members[] = ['id' => $member['id'], 'nick' => $nick, 'owner' => $member['meta']['owner'] ?? ''];
            }
        }
        return $members;
    }

    /**
     * May $nick enter $room? The one check behind both ws.php's handshake
     * answer and check.php's explanation.
     *
     * @return array{status: int, error: ?string, replace: list<string>, members: list<array{id: string, nick: string, owner: string}>}
     *
     * @throws \Ws2fcgi\Exception\Ws2fcgiException when the control socket cannot be reached
     */
    public static function admission(\Ws2fcgi\ClientInterface $ws, string $room, string $nick, string $owner): array
    {
        $problem = Rules::roomProblem($room) ?? Rules::nickProblem($nick);
        if ($problem !== null) {
            return ['status' => 400, 'error' => $problem, 'replace' => [], 'members' => []];
        }
        $members = self::members($ws->presence(self::channel($room)));
        $conflict = Rules::nickConflict($nick, $owner, $members);
        if ($conflict['taken']) {
            return ['status' => 409, 'error' => Rules::takenMessage($nick), 'replace' => [], 'members' => $members];
        }
        return ['status' => 200, 'error' => null, 'replace' => $conflict['replace'], 'members' => $members];
    }

    /** @param array<string, mixed> $data */
    public static function json(array $data): string
    {
        return json_encode($data, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
    }

    /** Now, in Unix milliseconds (the unit of every "ts"). */
    public static function nowMs(): int
    {
        return (int) floor(microtime(true) * 1000);
    }
}
