from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.views import APIView

from chat.api.parsers import OrjsonParser
from chat.api.renderers import OrjsonRenderer


class ApiView(APIView):
    """The base of every endpoint: strict JSON in, orjson out, the one error envelope."""

    parser_classes = [OrjsonParser]
    renderer_classes = [OrjsonRenderer, BrowsableAPIRenderer]
