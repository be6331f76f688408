import threading

from django.template.response import SimpleTemplateResponse
from rest_framework.exceptions import APIException
from rest_framework.permissions import SAFE_METHODS
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from chat import replica, throttles
from chat.api.parsers import OrjsonParser
from chat.api.renderers import OrjsonRenderer

_bound = threading.local()


def validated(serializer_class, data) -> dict:
    """`data` validated by `serializer_class`: what `is_valid(raise_exception=True)` gives, and raises.

    From one instance per class and thread, bound once: DRF deep-copies a
    serializer's declared fields for every new instance (a nested one's with it:
    the message serializer's 18 fields), a third of a POST's CPU. Validating
    changes nothing on a serializer or its fields, so one instance serves request
    after request; per thread, so none is shared.
    """
    serializers = _bound.__dict__
    serializer = serializers.get(serializer_class)
    if serializer is None:
        serializer = serializers[serializer_class] = serializer_class()
    return serializer.run_validation(data)


def forget_renderer_context(response) -> None:
    """After rendering: the context (view, request, the response itself) is no longer needed."""
    vars(response).pop("renderer_context", None)


class ApiView(APIView):
    """The base of every endpoint: strict JSON in, orjson out, the one error envelope, rate limits."""

    parser_classes = [OrjsonParser]
    renderer_classes = [OrjsonRenderer, BrowsableAPIRenderer]
    # The limits each request spends (chat.throttles): "user" is the caller's tier,
    # or "anon" per client IP without valid credentials. () means no limit.
    throttle_scopes: tuple[str, ...] = ("user",)

    def initial(self, request, *args, **kwargs):
        # Authenticate first, so the limiter knows whom to count; a caller with bad
        # credentials is counted as anonymous, per IP, before its 401.
        try:
            request.user  # noqa: B018 (runs the authenticators)
        except APIException:
            throttles.check(request, self)
            raise
        throttles.check(request, self)
        # A body over the limit, hidden by BodySizeLimitMiddleware: refused once counted.
        too_large = getattr(request._request, "body_too_large", None)
        if too_large is not None:
            raise too_large
        super().initial(request, *args, **kwargs)

    def perform_content_negotiation(self, request, force=False):
        # Most callers accept anything (a browser's fetch, curl, the widget): the first
        # renderer, as DRF would pick it, without parsing an Accept header or copying
        # every header into request.headers to read it. Anything else goes to DRF.
        if (
            request.META.get("HTTP_ACCEPT", "*/*") == "*/*"
            and not getattr(self, "format_kwarg", None)  # set by initial(), which may not have run
            and api_settings.URL_FORMAT_OVERRIDE not in request._request.GET
        ):
            renderer = self.renderer_classes[0]()
            return renderer, renderer.media_type
        return super().perform_content_negotiation(request, force)

    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        # DRF holds a response in two reference cycles: the view keeps it (view.response)
        # and, while rendering, the response keeps itself and the view in its
        # renderer_context. Either makes every response (a 1,000-message history is
        # 600 KB) wait for a full garbage collection instead of being freed once sent.
        # Both are broken here, the second by Django's public post-render hook;
        # tests/test_api_memory.py fails if an upgrade adds another.
        vars(self).pop("response", None)
        if isinstance(response, SimpleTemplateResponse):
            response.add_post_render_callback(forget_renderer_context)
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        # Here rather than in the handlers, so errors raised anywhere get the headers too.
        response = super().finalize_response(request, response, *args, **kwargs)
        for name, value in throttles.response_headers(request).items():
            response[name] = value
        if request.method not in SAFE_METHODS and response.status_code < 400:
            replica.note_write(self.writers(request))
        return response

    def writers(self, request) -> list[str]:
        """Who just wrote (chat.replica), so that their next reads see it: the user.

        A write to a guest session is marked for the session by the service itself
        (chat.services.messages), before its waiters are woken.
        """
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return [replica.user_caller(user)]
        return []
