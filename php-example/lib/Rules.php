<?php
// The chat's rules as pure functions: nicknames, room names, who may take a
// nickname, and what a client message must look like. No I/O here, so
// tests/HandlerTest.php checks every rule without a server, and the same
// functions serve ws.php (the authority) and public/check.php (the
// explanation the page shows).

declare(strict_types=1);

namespace Chat;

final class Rules
{
    /** Longest nickname, in characters (all ASCII, so also bytes). */
    public const MAX_NICK = 32;
    /** Longest room name, in characters. */
    public const MAX_ROOM = 32;
    /** Longest message text, in bytes of UTF-8. */
    public const MAX_TEXT_BYTES = 2000;
    /**
     * Longest raw WebSocket message, in bytes. Larger than MAX_TEXT_BYTES
     * because JSON escaping can double the text ("\"" for every quote).
     */
    public const MAX_RAW_BYTES = 8 * 1024;

    /**
     * Letters, digits, _ . - and single inner spaces. ASCII only on purpose:
     * "alice" and "аlice" (Cyrillic а) would look the same in the member list.
     */
    private const NICK_PATTERN = '/^[A-Za-z0-9_.\-]+( [A-Za-z0-9_.\-]+)*$/D';
    private const ROOM_PATTERN = '/^[A-Za-z0-9_\-]+$/D';

    /** Trims the nickname as typed; validation then applies to the result. */
    public static function normalizeNick(string $nick): string
    {
        return trim($nick);
    }

    /** Why $nick cannot be used (already normalized), or null when it can. */
    public static function nickProblem(string $nick): ?string
    {
        if ($nick === '') {
            return 'choose a nickname';
        }
        if (strlen($nick) > self::MAX_NICK) {
            return 'a nickname has at most ' . self::MAX_NICK . ' characters';
        }
        if (!preg_match(self::NICK_PATTERN, $nick)) {
            return 'a nickname may hold only letters, digits, single spaces and _ . -';
        }
        return null;
    }

    /** Why $room cannot be used, or null when it can. */
    public static function roomProblem(string $room): ?string
    {
        if ($room === '') {
            return 'choose a room';
        }
        if (strlen($room) > self::MAX_ROOM) {
            return 'a room name has at most ' . self::MAX_ROOM . ' characters';
        }
        if (!preg_match(self::ROOM_PATTERN, $room)) {
            return 'a room name may hold only letters, digits, _ and -';
        }
        return null;
    }

    /**
     * May $nick (from browser $owner) enter a room whose members are $members?
     *
     * Nicknames are compared case-insensitively. A member with the same
     * nickname and the same owner is the same person in another tab, or the
     * connection a reload is replacing: the newcomer takes over and that
     * connection is closed. Anyone else with the nickname makes it taken.
     *
     * @param list<array{id: string, nick: string, owner: string}> $members
     * @return array{taken: bool, replace: list<string>} replace: ids to close
     */
    public static function nickConflict(string $nick, string $owner, array $members): array
    {
        $replace = [];
        foreach ($members as $member) {
            if (strcasecmp($member['nick'], $nick) !== 0) {
                continue;
            }
            if ($owner === '' || !hash_equals($member['owner'], $owner)) {
                return ['taken' => true, 'replace' => []];
            }
            $replace[] = $member['id'];
        }
        return ['taken' => false, 'replace' => $replace];
    }

    /** The refusal text for a taken nickname. */
    public static function takenMessage(string $nick): string
    {
        return "the nickname \"$nick\" is taken in this room";
    }

    /**
     * The id after which a page asks for the messages it may have missed:
     * $raw is exactly {"type":"backlog","after":<id, 0 or more>}; null for
     * anything else (which parseSay() then judges).
     */
    public static function parseBacklog(string $raw): ?int
    {
        if (strlen($raw) > 100) {
            return null;
        }
        try {
            $data = json_decode($raw, true, 2, JSON_THROW_ON_ERROR);
        } catch (\JsonException) {
            return null;
        }
        if (!is_array($data) || ($data['type'] ?? null) !== 'backlog') {
            return null;
        }
        $keys = array_keys($data);
        sort($keys);
        if ($keys !== ['after', 'type']) {
            return null;
        }
        $after = $data['after'];
        return is_int($after) && $after >= 0 ? $after : null;
    }

    /**
     * Parses one client message; it must be {"type":"say","text":"..."}.
     *
     * @return array{0: ?string, 1: ?string} [the text, null] or [null, why not]
     */
    public static function parseSay(string $raw): array
    {
        if (strlen($raw) > self::MAX_RAW_BYTES) {
            return [null, 'message too large'];
        }
        try {
            $data = json_decode($raw, true, 4, JSON_THROW_ON_ERROR);
        } catch (\JsonException) {
            return [null, 'a message must be JSON'];
        }
        if (!is_array($data) || array_is_list($data) || ($data['type'] ?? null) !== 'say') {
            return [null, 'a message must be {"type":"say","text":"..."}'];
        }
        if (array_diff(array_keys($data), ['type', 'text']) !== []) {
            return [null, 'a message has only "type" and "text"'];
        }
        $text = $data['text'] ?? null;
        if (!is_string($text)) {
            return [null, '"text" must be a string'];
        }
        $text = trim($text);
        if ($text === '') {
            return [null, 'the message is empty'];
        }
        if (strlen($text) > self::MAX_TEXT_BYTES) {
            return [null, 'a message has at most ' . self::MAX_TEXT_BYTES . ' bytes'];
        }
        // Newlines and tabs are fine; other control characters are not text.
        if (preg_match('/[\x00-\x08\x0B-\x1F\x7F]/', $text)) {
            return [null, 'the message contains control characters'];
        }
        return [$text, null];
    }
}
