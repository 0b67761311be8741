<?php

declare(strict_types=1);

namespace Ws2fcgi\Symfony;

use Symfony\Component\HttpFoundation\Response as HttpResponse;
use Ws2fcgi\Response;

/**
 * Turns a Ws2fcgi\Response into Symfony's: the status, every header (X-WS-*
 * directives, Set-Cookie, Content-Type) and the body. Ws2fcgiSubscriber
 * does it for controllers that return a Ws2fcgi\Response; call it yourself
 * where a Symfony Response is needed.
 */
final class ResponseConverter
{
    public static function toSymfony(Response $response): HttpResponse
    {
        $answer = $response->toArray();
        $symfony = new HttpResponse($answer['body'], $answer['status']);
        foreach ($answer['headers'] as $name => $values) {
            $symfony->headers->set($name, $values, false);
        }
        return $symfony;
    }
}
