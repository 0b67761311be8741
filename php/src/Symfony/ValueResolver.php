<?php

declare(strict_types=1);

namespace Ws2fcgi\Symfony;

use Symfony\Component\HttpKernel\Controller\ArgumentValueResolverInterface;
use Symfony\Component\HttpKernel\Controller\ValueResolverInterface;

// The interface of controller argument resolvers changed in Symfony 6.2:
// ValueResolverInterface (resolve() alone) replaced the deprecated
// ArgumentValueResolverInterface (supports() and resolve()), which 7.0
// removed. EventValueResolver implements both methods and this interface
// extends whichever the installed Symfony has.
if (\interface_exists(ValueResolverInterface::class)) {
    /** @internal the controller argument resolver interface of Symfony 6.2 and later */
    interface ValueResolver extends ValueResolverInterface
    {
    }
} else {
    /** @internal the controller argument resolver interface of Symfony 5.4 to 6.1 */
    interface ValueResolver extends ArgumentValueResolverInterface
    {
    }
}
