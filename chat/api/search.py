"""GET /api/chat/search: full-text search over the caller's own messages."""

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response

from chat import selectors
from chat.api import fields
from chat.api.base import ApiView
from chat.api.messages import MessageOutputSerializer
from chat.api.schema import RATE_LIMIT_HEADERS, REQUEST_ID_HEADERS, errors

MAX_QUERY_LENGTH = 200
MAX_LIMIT = 100


@extend_schema_serializer(component_name="ChatSearchResult")
class ResultSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    session_title = serializers.CharField()
    message = MessageOutputSerializer()
    snippet = serializers.CharField(help_text="a window of the content around the first match")
    highlights = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2),
        help_text="[start, end) character (code point) offsets of the matched words in `snippet`",
    )


class ChatSearchApi(ApiView):
    """Search your messages: every word must match (case and accents ignored), best matches first, then newest."""

    @extend_schema_serializer(component_name="ChatSearchQuery")
    class QuerySerializer(serializers.Serializer):
        q = fields.StrictCharField(min_length=1, max_length=MAX_QUERY_LENGTH, help_text="the words to find")
        limit = serializers.IntegerField(required=False, default=20, min_value=1, max_value=MAX_LIMIT)
        cursor = serializers.CharField(required=False, max_length=200, help_text="`next` of the previous page")

    @extend_schema_serializer(component_name="ChatSearchPage")
    class OutputSerializer(serializers.Serializer):
        results = ResultSerializer(many=True)
        next = serializers.CharField(allow_null=True, help_text="cursor of the next page, or null")

    @extend_schema(
        operation_id="chat_search",
        parameters=[QuerySerializer, *REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={200: OutputSerializer, **errors(400, 401, 429, 500, 503)},
    )
    def get(self, request):
        # A plain dict: DRF reads a QueryDict as a form, where `?q=` means "not given".
        query = self.QuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        return Response(selectors.message_search(user_id=request.user.pk, **query.validated_data))
