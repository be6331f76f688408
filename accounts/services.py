"""Writes to users and their tokens, shared by the admin and the commands."""

import secrets

from django.db import transaction
from rest_framework.authtoken.models import Token

from accounts.models import Tier, User


def user_get_or_create(*, username: str, create: bool) -> tuple[User, bool]:
    """The user named `username`; made with no usable password when `create`."""
    try:
        return User.objects.get(username=username), False
    except User.DoesNotExist:
        if not create:
            raise
    user = User(username=username)
    user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    return user, True


def user_set_staff(*, user: User) -> User:
    """Make the user staff (the inbox, replies to guests, metrics); the admin needs a password too."""
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    return user


def user_set_tier(*, user: User, tier: str) -> User:
    if tier not in Tier.values:
        raise ValueError(f"unknown tier {tier!r}; choose from {', '.join(Tier.values)}")
    user.tier = tier
    user.save(update_fields=["tier"])
    return user


@transaction.atomic
def token_for(*, user: User, rotate: bool = False) -> Token:
    """The user's API token, made on first use; a new key when rotating."""
    if rotate:
        Token.objects.filter(user=user).delete()
    token, _ = Token.objects.get_or_create(user=user)
    return token


@transaction.atomic
def demo_staff_reset(*, username: str) -> tuple[User, str]:
    """A staff member for the demo (enterprise tier), made if missing, with a new random password."""
    user, _ = user_get_or_create(username=username, create=True)
    password = secrets.token_urlsafe(12)
    user.set_password(password)
    user.is_staff = True
    user.tier = Tier.ENTERPRISE
    user.save(update_fields=["password", "is_staff", "tier"])
    return user, password
