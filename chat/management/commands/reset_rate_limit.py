from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError
from django_redis.cache import RedisCache

from accounts.models import User
from chat import throttles
from chat.net import ip_identity


class Command(BaseCommand):
    help = (
        "Lift a rate-limit block: delete the counters of the current windows for USERNAME (every tier), "
        "for --ip IP (anonymous callers, guest session creation, the guest flood guard; an IPv6 address "
        "stands for its /64, as the limiter counts it) or for --guest KEY "
        "(a guest session's polling and sending). The next request starts a fresh count."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?", help="a user's username")
        parser.add_argument("--ip", help="a client IP address, as the limiter sees it (see TRUSTED_PROXY_COUNT)")
        parser.add_argument("--guest", metavar="KEY", help="a guest session key")
        parser.add_argument("--dry-run", action="store_true", help="show the counters without deleting them")

    def handle(self, *args, username, ip, guest, dry_run, **options):
        if sum(value is not None for value in (username, ip, guest)) != 1:
            raise CommandError("give exactly one of USERNAME, --ip IP or --guest KEY")
        if username is not None:
            try:
                user = User.objects.get(username=username)
            except User.DoesNotExist:
                raise CommandError(f"no user {username!r}") from None
            who, limits = f"user {username!r}", throttles.limits_for_user(user)
        elif ip is not None:
            identity = ip_identity(ip)
            if identity is None:
                raise CommandError(f"{ip!r} is not an IP address")
            who, limits = f"IP {identity}", throttles.limits_for_identity(throttles.IP, identity)
        else:
            if not guest.strip():
                raise CommandError("the guest session key is empty")
            who, limits = f"guest session {guest!r}", throttles.limits_for_identity(throttles.SESSION_KEY, guest)

        cache = caches["default"]
        if not isinstance(cache, RedisCache):
            self.stderr.write(
                "Note: the cache is not Redis; this process's counters are not the server's (set REDIS_URL)."
            )
        keys = throttles.limiter.current_keys(limits)
        counts = cache.get_many(keys)
        if not dry_run:
            cache.delete_many(keys)
        verb = "Would reset" if dry_run else "Reset"
        spent = ", ".join(f"{key}: {count}" for key, count in counts.items()) or "no requests counted"
        self.stdout.write(f"{verb} the rate limits of {who} for the current window ({spent}).")
