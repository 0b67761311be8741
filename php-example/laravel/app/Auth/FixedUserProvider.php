<?php

declare(strict_types=1);

namespace App\Auth;

use Illuminate\Auth\GenericUser;
use Illuminate\Contracts\Auth\Authenticatable;
use Illuminate\Contracts\Auth\UserProvider;
use Illuminate\Contracts\Hashing\Hasher;

/**
 * The people of config/chat.php as Laravel users: the example needs no
 * database. Each is a GenericUser with id, name, email and rooms.
 */
final class FixedUserProvider implements UserProvider
{
    /**
     * @param  array<int, array{name: string, email: string, password: string, rooms: list<string>}>  $users
     */
    public function __construct(private readonly array $users, private readonly Hasher $hasher)
    {
    }

    public function retrieveById($identifier)
    {
        $id = filter_var($identifier, FILTER_VALIDATE_INT);

        return $id !== false && isset($this->users[$id]) ? $this->user($id) : null;
    }

    public function retrieveByToken($identifier, $token)
    {
        return null; // no "remember me"
    }

    public function updateRememberToken(Authenticatable $user, $token)
    {
    }

    public function retrieveByCredentials(array $credentials)
    {
        foreach ($this->users as $id => $user) {
            if (isset($credentials['email']) && hash_equals($user['email'], (string) $credentials['email'])) {
                return $this->user($id);
            }
        }

        return null;
    }

    public function validateCredentials(Authenticatable $user, array $credentials)
    {
        return $this->hasher->check((string) ($credentials['password'] ?? ''), $user->getAuthPassword());
    }

    private function user(int $id): GenericUser
    {
        return new GenericUser(['id' => $id, 'remember_token' => null] + $this->users[$id]);
    }
}
