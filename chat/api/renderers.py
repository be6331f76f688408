from rest_framework.renderers import JSONRenderer

from chat.json import dumps


class OrjsonRenderer(JSONRenderer):
    """DRF's JSON renderer, written by orjson (same bytes as DRF's for our data)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return dumps(data)
