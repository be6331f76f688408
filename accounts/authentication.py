from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header

from accounts import selectors

KEYWORDS = (b"token", b"bearer")


class BearerOrTokenAuthentication(TokenAuthentication):
    """DRF token authentication that accepts `Token <key>` and `Bearer <key>`."""

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in KEYWORDS:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header.")
        key = parts[1]
        # A key that cannot be a token (NUL bytes, non-ASCII, too long) never
        # reaches the database, where PostgreSQL would reject it with an error.
        if len(key) > 40 or not key.isalnum():
            raise exceptions.AuthenticationFailed("Invalid token.")
        return self.authenticate_credentials(key.decode("ascii"))

    def authenticate_credentials(self, key):
        # As DRF's, with the lookup of accounts.selectors (SQL written once, not compiled per request).
        found = selectors.token_user(key=key)
        if found is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user, token = found
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return user, token

    def authenticate_header(self, request):
        return "Bearer"
