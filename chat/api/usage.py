"""GET /api/chat/usage: the caller's usage per UTC day and model, from the ledger."""

import re
from datetime import UTC, date, datetime, timedelta

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from accounts.models import User
from chat import selectors
from chat.api.base import ApiView, validated
from chat.api.schema import RATE_LIMIT_HEADERS, REQUEST_ID_HEADERS, errors
from chat.exceptions import Forbidden, NotFound

DEFAULT_DAYS = 30
MAX_DAYS = 366
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


@extend_schema_field(OpenApiTypes.DATE)
class IsoDateField(serializers.Field):
    """A calendar date written exactly as YYYY-MM-DD."""

    default_error_messages = {"invalid": "Use a date as YYYY-MM-DD."}

    def to_internal_value(self, data):
        if not isinstance(data, str) or not DATE_RE.match(data):
            self.fail("invalid")
        try:
            return date.fromisoformat(data)
        except ValueError:
            self.fail("invalid")

    def to_representation(self, value):
        return value.isoformat()


class UsageFiguresSerializer(serializers.Serializer):
    messages = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    errors = serializers.IntegerField(help_text="messages saved as errors")


@extend_schema_serializer(component_name="UsageDay")
class UsageDaySerializer(UsageFiguresSerializer):
    date = serializers.DateField()
    model = serializers.CharField(allow_null=True, help_text="null for messages without a model")


class ChatUsageApi(ApiView):
    """Your usage per UTC day and model: every message as last saved; deleting does not lower it."""

    @extend_schema_serializer(component_name="ChatUsageQuery")
    class QuerySerializer(serializers.Serializer):
        to = IsoDateField(required=False, help_text="last UTC day, inclusive (YYYY-MM-DD); default today")
        user = serializers.CharField(required=False, help_text="staff only: another user's username")

        def get_fields(self):
            # `from` is a Python keyword: declared here rather than as a class attribute.
            fields = super().get_fields()
            fields["from"] = IsoDateField(
                required=False, help_text=f"first UTC day, inclusive (YYYY-MM-DD); default `to` - {DEFAULT_DAYS - 1}"
            )
            return fields

        def validate(self, attrs):
            end = attrs.get("to") or datetime.now(UTC).date()
            start = attrs.get("from") or end - timedelta(days=DEFAULT_DAYS - 1)
            if start > end:
                raise serializers.ValidationError({"from": ["`from` is after `to`."]})
            if (end - start).days + 1 > MAX_DAYS:
                raise serializers.ValidationError({"from": [f"At most {MAX_DAYS} days at once."]})
            return {"start": start, "end": end, "username": attrs.get("user")}

    @extend_schema_serializer(component_name="ChatUsage")
    class OutputSerializer(serializers.Serializer):
        to = serializers.DateField()
        totals = UsageFiguresSerializer()
        days = UsageDaySerializer(many=True)

        def get_fields(self):
            return {"from": serializers.DateField(), **super().get_fields()}

    @extend_schema(
        operation_id="chat_usage",
        parameters=[QuerySerializer, *REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={200: OutputSerializer, **errors(400, 401, 403, 404, 429, 500, 503)},
        description=(
            f"Messages, tokens and errors per UTC day (of each message's timestamp) and model, from `from` "
            f"to `to` inclusive (at most {MAX_DAYS} days; default the last {DEFAULT_DAYS}), with totals. "
            "Staff may pass `user`."
        ),
    )
    def get(self, request):
        # A plain dict: DRF reads a QueryDict as a form, where `?user=` means "not given".
        query = validated(self.QuerySerializer, request.query_params.dict())
        username = query["username"]
        user_id = request.user.pk
        if username is not None and username != request.user.get_username():
            if not request.user.is_staff:
                raise Forbidden("Only staff may read another user's usage")
            user_id = User.objects.filter(username=username).values_list("pk", flat=True).first()
            if user_id is None:
                raise NotFound("Unknown user")
        # The JSON written by the database, or by orjson (the same bytes as DRF's renderer):
        # no negotiation, no browsable page.
        body = selectors.user_usage_json(user_id=user_id, start=query["start"], end=query["end"])
        return HttpResponse(body, content_type="application/json")
