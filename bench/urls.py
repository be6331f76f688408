"""Production's URLs plus /bench/bare, the baseline every figure is divided by.

Mounted only by bench.settings; chatsite.urls never includes it.
"""

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from bench import experiments
from chatsite.urls import handler400, handler403, handler404, handler500  # noqa: F401 (Django looks them up here)

# Off unless BENCH_EXPERIMENTS names some (bench/experiments.py): proposed app changes, measured.
APPLIED_EXPERIMENTS = experiments.apply()

BARE_BODY = {"success": True, "message": "ok", "data": None}


def bare(request: HttpRequest) -> JsonResponse:
    """A plain Django view with a small constant JSON body: the framework's floor."""
    return JsonResponse(BARE_BODY)


urlpatterns = [
    path("bench/bare", bare, name="bench-bare"),
    path("", include("chatsite.urls")),
]
