<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

/**
 * Pusher's end-to-end encrypted channels (`private-encrypted-`), as
 * pusher-http-php does them: ws2fcgi relays the ciphertext and never holds
 * the key.
 *
 * ```text
 * shared secret  = SHA-256(channel . master key)                  (32 bytes)
 * auth answer    + "shared_secret": base64(shared secret)
 * event data     = {"nonce":base64(24 random bytes),"ciphertext":base64(secretbox(data, nonce, shared secret))}
 * ```
 */
final class PusherEncryption
{
    public const PREFIX = 'private-encrypted-';

    private readonly string $masterKey;

    /**
     * @throws \InvalidArgumentException unless the key is base64 of 32 bytes
     */
    public function __construct(string $masterKeyBase64)
    {
        $key = base64_decode($masterKeyBase64, true);
        if ($key === false || strlen($key) !== 32) {
            throw new \InvalidArgumentException('ws2fcgi: the encryption master key must be 32 bytes, base64-encoded (e.g. openssl rand -base64 32)');
        }
        if (! function_exists('sodium_crypto_secretbox')) {
            throw new \LogicException('ws2fcgi: encrypted channels need the sodium extension');
        }
        $this->masterKey = $key;
    }

    public static function isEncrypted(string $channel): bool
    {
        return str_starts_with($channel, self::PREFIX);
    }

    /** The channel's key, base64, for the authorization answer's `shared_secret`. */
    public function sharedSecret(string $channel): string
    {
        return base64_encode($this->key($channel));
    }

    /** The event data for an encrypted channel: `$data` sealed with the channel's key. */
    public function encrypt(string $channel, string $data): string
    {
        $nonce = random_bytes(SODIUM_CRYPTO_SECRETBOX_NONCEBYTES);

        return json_encode([
            'nonce' => base64_encode($nonce),
            'ciphertext' => base64_encode(sodium_crypto_secretbox($data, $nonce, $this->key($channel))),
        ], JSON_THROW_ON_ERROR);
    }

    private function key(string $channel): string
    {
        return hash('sha256', $channel . $this->masterKey, true);
    }
}
