from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self):
        # Here, not at import: the limiter imports DRF, which needs the app registry.
        from chat import checks, metrics, throttles  # noqa: F401 (checks registers the rate-limit system checks)

        throttles.rate_limited.connect(metrics.on_rate_limited, dispatch_uid="metrics.rate_limited")
        throttles.limiter_failed.connect(metrics.on_limiter_failed, dispatch_uid="metrics.limiter_failed")
