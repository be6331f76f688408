"""Reads of users and their tokens, shared by the API's authentication and the live process."""

import functools

from django.db import DEFAULT_DB_ALIAS, connections
from rest_framework.authtoken.models import Token

from accounts.models import User


@functools.cache
def _token_user_sql() -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The SQL of token_user, written once: (sql, the user's attnames, the token's attnames)."""
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    user_fields = tuple(f.attname for f in User._meta.concrete_fields)
    token_fields = tuple(f.attname for f in Token._meta.concrete_fields)
    columns = [f"u.{quote(f.column)}" for f in User._meta.concrete_fields]
    columns += [f"t.{quote(f.column)}" for f in Token._meta.concrete_fields]
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(Token._meta.db_table)} t "  # noqa: S608 (names from the models)
        f"JOIN {quote(User._meta.db_table)} u ON u.{quote(User._meta.pk.column)} = t.{quote('user_id')} "
        f"WHERE t.{quote(Token._meta.pk.column)} = %s"
    )
    return sql, user_fields, token_fields


def token_user(*, key: str) -> tuple[User, Token] | None:
    """The user holding the API token `key`, and the token; None for an unknown key.

    What DRF's `Token.objects.select_related("user").get(key=key)` returns, read
    with SQL written once: the ORM compiled that query on every request, most of
    an authenticated request's cost where the answer itself is small (a usage
    read, a 304). Always read from the primary, never cached: a rotated or
    deleted token fails on the very next request, in every process.
    """
    sql, user_fields, token_fields = _token_user_sql()
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(sql, [key])
        row = cursor.fetchone()
    if row is None:
        return None
    n = len(user_fields)
    user = User.from_db(DEFAULT_DB_ALIAS, user_fields, row[:n])
    token = Token.from_db(DEFAULT_DB_ALIAS, token_fields, row[n:])
    token.user = user  # the join's user: no second query when token.user is read
    return user, token
