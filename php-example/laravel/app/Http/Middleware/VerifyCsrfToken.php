<?php

namespace App\Http\Middleware;

use Illuminate\Foundation\Http\Middleware\VerifyCsrfToken as Middleware;

// Unchanged from Laravel's skeleton: ws2fcgi's EventKernel skips it for
// WebSocket events only, nothing here needs to know.
class VerifyCsrfToken extends Middleware
{
    protected $except = [];
}
