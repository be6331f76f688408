from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.services import demo_staff_reset


class Command(BaseCommand):
    help = (
        "Make (or reset) the demo's staff member, who can log in to the inbox, and print "
        "its new random password (the last line). Only with DEBUG or DEMO_PAGE on."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo_staff", help="default: demo_staff")

    def handle(self, *args, username, **options):
        if not (settings.DEBUG or settings.DEMO_PAGE):
            raise CommandError("a demo account with a printed password: only with DEBUG=true or DEMO_PAGE=true")
        user, password = demo_staff_reset(username=username)
        self.stdout.write(f"Staff user {user.username!r} (tier {user.tier}), new password:")
        self.stdout.write(password)
