"""URL configuration: the API, operations endpoints, the inbox and demo pages, and the admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from chat.api import errors
from chat.api.doors import limited_door

urlpatterns = [
    path("", include("chat.urls")),
    path("", include("chat.web.urls")),
    # Ahead of the admin's own route of the same path: posted passwords are limited per IP.
    path("admin/login/", limited_door("admin_login", methods=("POST",))(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/schema/", limited_door("schema")(SpectacularAPIView.as_view()), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]

handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.page_not_found
handler500 = errors.server_error
