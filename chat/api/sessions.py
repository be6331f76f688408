"""GET /api/chat/sessions and DELETE /api/chat/sessions/{id}: the caller's session list."""

from django.core.exceptions import ValidationError
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from chat import selectors, services
from chat.api.base import ApiView
from chat.errors import NotFound
from chat.models import ChatSession, client_id_validator


class SessionCursorPagination(CursorPagination):
    page_size = 50
    ordering = ("-updated_at", "-id")


class ChatSessionListApi(ApiView):
    """Your chat sessions, most recently updated first, 50 a page (cursor pagination)."""

    pagination_class = SessionCursorPagination

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = ChatSession
            fields = [
                "id",
                "title",
                "message_count",
                "total_tokens",
                "last_model",
                "last_message_preview",
                "last_message_timestamp",
                "created_at",
                "updated_at",
            ]

    def get(self, request):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.user_sessions(user=request.user), request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class ChatSessionDetailApi(ApiView):
    """Delete one of your chat sessions and all its messages."""

    def delete(self, request, session_id: str):
        try:
            client_id_validator(session_id)
        except ValidationError:
            raise NotFound("Session not found") from None
        services.session_delete(user=request.user, session_id=session_id)
        return Response(status=204)
