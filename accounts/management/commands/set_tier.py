from django.core.management.base import BaseCommand, CommandError

from accounts.models import Tier, User
from accounts.services import user_set_tier


class Command(BaseCommand):
    help = "Set USERNAME's tier (free, pro or enterprise); the new limit applies to the next request."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("tier", choices=Tier.values)

    def handle(self, *args, username, tier, **options):
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist:
            raise CommandError(f"no user {username!r}") from None
        previous = user.tier
        user_set_tier(user=user, tier=tier)
        self.stdout.write(f"User {username!r}: tier {previous} -> {tier}.")
