"""Serializer fields that take JSON types as they are.

DRF's fields coerce: `"42"` becomes 42, `1` becomes True, `42` becomes "42", and
CharField trims whitespace. A chat history must store what the client sent byte
for byte and reject the wrong type, so these fields do not coerce.
"""

import re

from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

# The largest value of the integer columns (PostgreSQL `integer`).
INT_MAX = 2**31 - 1

SURROGATE = re.compile("[\ud800-\udfff]")


class SurrogateCharactersValidator(ProhibitSurrogateCharactersValidator):
    """DRF's check (same message and code) by one regex search instead of a Python loop over every character.

    DRF's loop was a third of an import's validation: 2 µs per character of content.
    """

    def __call__(self, value):
        found = SURROGATE.search(str(value))
        if found is not None:
            raise serializers.ValidationError(self.message.format(code_point=ord(found.group())), code=self.code)


class StrictCharField(serializers.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators = [
            SurrogateCharactersValidator() if type(v) is ProhibitSurrogateCharactersValidator else v
            for v in self.validators
        ]

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class NonBlankCharField(StrictCharField):
    """Text that must hold more than whitespace (a title, a message): "  " is refused as blank.

    Whitespace is what str.strip() removes; the schema's pattern spells out the same
    characters (chat.api.schema.NOT_BLANK_PATTERN).
    """

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not value.strip():
            self.fail("blank")
        return value


class StrictIntegerField(serializers.IntegerField):
    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", INT_MAX)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictDateTimeField(serializers.DateTimeField):
    def to_internal_value(self, value):
        # isascii: Django's parser takes any script's digits ("٢٠٢٥-..."), which int() reads.
        if not isinstance(value, str) or not value.isascii():
            self.fail("invalid", format="ISO 8601")
        return super().to_internal_value(value)


class StrictRegexField(serializers.RegexField):
    def __init__(self, regex, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(regex, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
