<?php

declare(strict_types=1);

namespace App;

use Symfony\Bundle\FrameworkBundle\FrameworkBundle;
use Symfony\Bundle\FrameworkBundle\Kernel\MicroKernelTrait;
use Symfony\Component\DependencyInjection\Loader\Configurator\ContainerConfigurator;
use Symfony\Component\HttpKernel\Kernel as BaseKernel;
use Symfony\Component\Routing\Loader\Configurator\RoutingConfigurator;

/**
 * A minimal Symfony 5.4 app: FrameworkBundle, native file sessions under
 * var/, config/services.yaml (the ws2fcgi services), two controllers.
 */
final class Kernel extends BaseKernel
{
    use MicroKernelTrait;

    public function registerBundles(): iterable
    {
        return [new FrameworkBundle()];
    }

    protected function configureContainer(ContainerConfigurator $container): void
    {
        $container->extension('framework', [
            'secret' => 'ws2fcgi-symfony-test',
            'http_method_override' => false,
            'session' => [
                'handler_id' => 'session.handler.native_file',
                'save_path' => '%kernel.project_dir%/var/sessions',
                'storage_factory_id' => 'session.storage.factory.native',
                'cookie_samesite' => 'lax',
            ],
            'router' => ['utf8' => true],
        ]);
        $container->import(__DIR__ . '/../config/services.yaml');
    }

    protected function configureRoutes(RoutingConfigurator $routes): void
    {
        // The WebSocket endpoint: open and close events arrive as GET, messages as POST.
        $routes->add('ws', '/ws')->controller(Controller\WsController::class)->methods(['GET', 'POST']);
        $routes->add('login', '/login')->controller([Controller\PageController::class, 'login']);
        $routes->add('announce', '/announce')->controller([Controller\PageController::class, 'announce']);
    }

    public function getProjectDir(): string
    {
        return \dirname(__DIR__);
    }
}
