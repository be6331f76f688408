"""Reads of users and their tokens, shared by the API's authentication and the live process."""

import functools

from django.db import DEFAULT_DB_ALIAS, connections
from rest_framework.authtoken.models import Token

from accounts.models import User

# The user's fields a request reads (who, which tier, staff or not, active or not).
# The rest stay deferred: read on demand by Django, one query more, if ever.
TOKEN_USER_FIELDS = ("id", "username", "tier", "is_staff", "is_superuser", "is_active")


@functools.cache
def _token_user_sql() -> tuple[str, tuple[str, ...]]:
    """The SQL of token_user, written once, and the names of its columns.

    The columns come in the model's field order, as Model.from_db takes a subset.
    """
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    fields = [f for f in User._meta.concrete_fields if f.attname in TOKEN_USER_FIELDS]
    columns = ", ".join(f"u.{quote(f.column)}" for f in fields)
    return (
        (
            f"SELECT {columns} FROM {quote(Token._meta.db_table)} t "  # noqa: S608 (names from the models)
            f"JOIN {quote(User._meta.db_table)} u ON u.{quote(User._meta.pk.column)} = t.{quote('user_id')} "
            f"WHERE t.{quote(Token._meta.pk.column)} = %s"
        ),
        tuple(f.attname for f in fields),
    )


def token_user(*, key: str) -> tuple[User, Token] | None:
    """The user holding the API token `key`, and the token; None for an unknown key.

    What DRF's `Token.objects.select_related("user").get(key=key)` answers, read
    with SQL written once: the ORM compiled that query on every request, most of
    an authenticated request's cost where the answer itself is small (a usage
    read, a 304). Only TOKEN_USER_FIELDS are read (no timestamps to parse).
    Always read from the primary, never cached: a rotated or deleted token, or a
    deactivated user, fails on the very next request, in every process.
    """
    sql, names = _token_user_sql()
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(sql, [key])
        row = cursor.fetchone()
    if row is None:
        return None
    user = User.from_db(DEFAULT_DB_ALIAS, names, row)
    token = Token.from_db(DEFAULT_DB_ALIAS, ("key", "user_id"), (key, user.pk))
    token.user = user  # no second query when token.user is read
    return user, token
