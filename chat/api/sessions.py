"""GET /api/chat/sessions, PATCH and DELETE /api/chat/sessions/{id}: the caller's session list."""

from datetime import UTC

from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import exceptions as drf
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from chat import selectors, services
from chat.api import fields
from chat.api.base import ApiView
from chat.api.schema import RATE_LIMIT_HEADERS, REQUEST_ID_HEADERS, errors
from chat.exceptions import NotFound
from chat.models import ChatSession, client_id_validator


def known_session_id(session_id: str) -> None:
    """A path segment that cannot be a session id names no session: 404, as an unknown one."""
    try:
        client_id_validator(session_id)
    except ValidationError:
        raise NotFound("Session not found") from None


class SessionCursorPagination(CursorPagination):
    page_size = 50
    ordering = ("-updated_at", "-id")

    def decode_cursor(self, request):
        """DRF's cursor, its position checked too: DRF hands any text to the filter, and a
        position that is not an aware datetime (`p=notadate`) made the query raise, a 500.
        """
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                position = parse_datetime(cursor.position)
                if position is None or position.tzinfo is None:
                    raise ValueError(cursor.position)
                position.astimezone(UTC)  # out of range once in UTC (year 1 at +14:00): OverflowError
            except (ValueError, OverflowError):
                raise drf.NotFound(self.invalid_cursor_message) from None
        return cursor


class ChatSessionListApi(ApiView):
    """Your chat sessions, most recently updated first, 50 a page (cursor pagination)."""

    pagination_class = SessionCursorPagination

    @extend_schema_serializer(component_name="ChatSession")
    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = ChatSession
            fields = selectors.SESSION_FIELDS

    @extend_schema(
        operation_id="chat_sessions_list",
        parameters=[*REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={200: OutputSerializer(many=True), **errors(400, 401, 404, 429, 500, 503)},
    )
    def get(self, request):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.user_sessions(user=request.user), request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)

    @extend_schema_serializer(component_name="ChatSessionsEraseQuery")
    class EraseQuerySerializer(serializers.Serializer):
        confirm = serializers.ChoiceField(choices=["all"], help_text="must be `all`")

    @extend_schema(
        operation_id="chat_sessions_erase",
        parameters=[EraseQuerySerializer, *REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={204: None, **errors(400, 401, 429, 500, 503)},
        description="Delete every one of your sessions and their messages (`confirm=all`). Usage stays.",
    )
    def delete(self, request):
        self.EraseQuerySerializer(data=request.query_params.dict()).is_valid(raise_exception=True)
        services.sessions_erase(user=request.user)
        return Response(status=204)


class ChatSessionDetailApi(ApiView):
    """Rename one of your chat sessions, or delete it and all its messages."""

    @extend_schema_serializer(component_name="SessionRename")
    class RenameSerializer(serializers.Serializer):
        title = fields.NonBlankCharField(max_length=255)

        # A rename needs its title, PATCH or not: never partial, so that the schema
        # (drf-spectacular makes PATCH bodies partial) says `title` is required.
        @property
        def partial(self) -> bool:
            return False

        @partial.setter
        def partial(self, value) -> None:
            pass

    @extend_schema(
        operation_id="chat_sessions_rename",
        request=RenameSerializer,
        parameters=[*REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={200: ChatSessionListApi.OutputSerializer, **errors(400, 401, 403, 404, 413, 415, 429, 500, 503)},
        description="Set the session's title (1-255 characters, not blank; surrounding whitespace is dropped).",
    )
    def patch(self, request, session_id: str):
        known_session_id(session_id)
        payload = self.RenameSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        session = services.session_rename(user=request.user, session_id=session_id, **payload.validated_data)
        return Response(ChatSessionListApi.OutputSerializer(session).data)

    @extend_schema(
        operation_id="chat_sessions_delete",
        parameters=[*REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={204: None, **errors(401, 403, 404, 429, 500, 503)},
    )
    def delete(self, request, session_id: str):
        known_session_id(session_id)
        services.session_delete(user=request.user, session_id=session_id)
        return Response(status=204)
