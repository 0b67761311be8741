<?php
// The chat's history: every message of every room, in one SQLite file.
//
// Why SQLite: PHP keeps nothing between requests, and each event may run in a
// different php-fpm worker, so history must live outside PHP. SQLite needs no
// server, comes with PHP (pdo_sqlite), and WAL mode lets the page (history on
// load) and the handler (inserts) use the file at the same time.

declare(strict_types=1);

namespace Chat;

final class History
{
    /** How many messages a room shows on entry. */
    public const RECENT = 50;
    /** Most messages one catch-up (after()) returns. */
    public const CATCH_UP = 200;

    private function __construct(private \PDO $db)
    {
    }

    /** Opens (and on first use creates) the database at $path. */
    public static function open(string $path): self
    {
        $dir = dirname($path);
        if (!is_dir($dir) && !@mkdir($dir, 0700, true) && !is_dir($dir)) {
            throw new \RuntimeException("cannot create the directory of the chat database: $dir");
        }
        $db = new \PDO('sqlite:' . $path, null, null, [
            \PDO::ATTR_ERRMODE => \PDO::ERRMODE_EXCEPTION,
            \PDO::ATTR_DEFAULT_FETCH_MODE => \PDO::FETCH_ASSOC,
            // Another worker may be writing: wait for it rather than fail.
            \PDO::ATTR_TIMEOUT => 5,
        ]);
        $db->exec('PRAGMA journal_mode = WAL');
        $db->exec('PRAGMA synchronous = NORMAL');
        $db->exec(
            'CREATE TABLE IF NOT EXISTS messages (
                id   INTEGER PRIMARY KEY AUTOINCREMENT,
                room TEXT    NOT NULL,
                nick TEXT    NOT NULL,
                text TEXT    NOT NULL,
                ts   INTEGER NOT NULL  -- Unix time, milliseconds
            )'
        );
        $db->exec('CREATE INDEX IF NOT EXISTS messages_room_id ON messages (room, id)');
        return new self($db);
    }

    /**
     * Stores a message and returns it as it is sent to clients.
     *
     * @return array{id: int, nick: string, text: string, ts: int}
     */
    public function add(string $room, string $nick, string $text, int $ts): array
    {
        $insert = $this->db->prepare('INSERT INTO messages (room, nick, text, ts) VALUES (?, ?, ?, ?)');
        $insert->execute([$room, $nick, $text, $ts]);
        return ['id' => (int) $this->db->lastInsertId(), 'nick' => $nick, 'text' => $text, 'ts' => $ts];
    }

    /**
     * The last $limit messages of $room, oldest first.
     *
     * @return list<array{id: int, nick: string, text: string, ts: int}>
     */
    public function recent(string $room, int $limit = self::RECENT): array
    {
        $select = $this->db->prepare(
            'SELECT id, nick, text, ts FROM messages WHERE room = ? ORDER BY id DESC LIMIT ?'
        );
        $select->bindValue(1, $room);
        $select->bindValue(2, $limit, \PDO::PARAM_INT);
        $select->execute();
        $rows = array_map(
            fn (array $r) => ['id' => (int) $r['id'], 'nick' => $r['nick'], 'text' => $r['text'], 'ts' => (int) $r['ts']],
            $select->fetchAll()
        );
        return array_reverse($rows);
    }

    /**
     * The messages of $room after the one with id $afterId, oldest first: at
     * most $limit, the newest ones when there are more ($more is then true).
     *
     * @return array{messages: list<array{id: int, nick: string, text: string, ts: int}>, more: bool}
     */
    public function after(string $room, int $afterId, int $limit = self::CATCH_UP): array
    {
        $select = $this->db->prepare(
            'SELECT id, nick, text, ts FROM messages WHERE room = ? AND id > ? ORDER BY id DESC LIMIT ?'
        );
        $select->bindValue(1, $room);
        $select->bindValue(2, $afterId, \PDO::PARAM_INT);
        $select->bindValue(3, $limit + 1, \PDO::PARAM_INT);
        $select->execute();
        $rows = array_map(
            fn (array $r) => ['id' => (int) $r['id'], 'nick' => $r['nick'], 'text' => $r['text'], 'ts' => (int) $r['ts']],
            $select->fetchAll()
        );
        $more = count($rows) > $limit;
        return ['messages' => array_reverse(array_slice($rows, 0, $limit)), 'more' => $more];
    }
}
