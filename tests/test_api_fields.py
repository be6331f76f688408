"""chat.api.fields: strict JSON types, and DRF's checks of a string at C speed."""

import pytest
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from chat.api import fields


@pytest.mark.parametrize("value", ["a\ud800", "\udfff", "ok " * 1000 + "\udc00 tail"])
def test_a_lone_surrogate_is_refused_as_drf_refuses_it(value):
    with pytest.raises(serializers.ValidationError) as ours:
        fields.StrictCharField().run_validation(value)
    with pytest.raises(serializers.ValidationError) as drfs:
        ProhibitSurrogateCharactersValidator()(value)
    assert ours.value.detail == drfs.value.detail
    assert ours.value.get_codes() == ["surrogate_characters_not_allowed"]


def test_text_is_kept_byte_for_byte_and_only_strings_are_taken():
    text = "  Café 🙂 \u200b東京\n"
    assert fields.StrictCharField().run_validation(text) == text
    with pytest.raises(serializers.ValidationError):
        fields.StrictCharField().run_validation(42)
    with pytest.raises(serializers.ValidationError):
        fields.StrictCharField().run_validation("a\x00b")


def test_drfs_character_loop_is_replaced_in_every_strict_string_field():
    field = fields.StrictCharField(max_length=10)
    kinds = [type(v) for v in field.validators]
    assert fields.SurrogateCharactersValidator in kinds
    assert ProhibitSurrogateCharactersValidator not in kinds
    assert len(kinds) == len(serializers.CharField(max_length=10).validators)
