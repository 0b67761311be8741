<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

use Closure;
use Illuminate\Http\Request;
use Symfony\Component\HttpKernel\Exception\AccessDeniedHttpException;

/**
 * Stands in for the app's CSRF middleware while {@see EventKernel} runs a
 * WebSocket event, and only then.
 *
 * A message event is a POST to the handshake's URI without a CSRF token (the
 * browser sent no form), so VerifyCsrfToken would answer 419. The CSRF check
 * has no work to do there: a cross-site page cannot send a message on a
 * connection it did not open, and the open event (a GET) checks the page's
 * Origin instead ({@see EventKernel}). Any request without the event marker is
 * refused, so this class can never let an ordinary POST through.
 */
final class SkipCsrfForWebSocketEvent
{
    /**
     * @param  Request  $request
     * @return mixed
     */
    public function handle($request, Closure $next)
    {
        if (! $request->attributes->has(EventKernel::EVENT_ATTRIBUTE)) {
            throw new AccessDeniedHttpException('ws2fcgi: the CSRF check is skipped for WebSocket events only');
        }

        return $next($request);
    }
}
