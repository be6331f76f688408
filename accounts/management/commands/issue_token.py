from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Tier, User
from accounts.services import token_for, user_get_or_create, user_set_staff, user_set_tier


class Command(BaseCommand):
    help = (
        "Print USERNAME's API token (the last line of output). The same token is "
        "printed every time unless --rotate replaces it."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--create", action="store_true", help="make the user (no usable password) if missing")
        parser.add_argument("--tier", choices=Tier.values, help="also set the user's tier")
        parser.add_argument("--staff", action="store_true", help="also make the user staff")
        parser.add_argument("--rotate", action="store_true", help="replace the token; the old one stops working")

    def handle(self, *args, username, create, tier, staff, rotate, **options):
        try:
            user, created = user_get_or_create(username=username, create=create)
        except User.DoesNotExist:
            raise CommandError(f"no user {username!r}; pass --create to make one") from None
        except ValidationError as exc:
            raise CommandError(f"cannot create {username!r}: {'; '.join(exc.messages)}") from None
        if created:
            self.stdout.write(f"Created user {username!r}.")
        if tier:
            user_set_tier(user=user, tier=tier)
        if staff:
            user_set_staff(user=user)
        token = token_for(user=user, rotate=rotate)
        self.stdout.write(
            f"User {username!r}: tier {user.tier}{', staff' if user.is_staff else ''}"
            f"{'; token rotated' if rotate else ''}."
        )
        self.stdout.write(token.key)
