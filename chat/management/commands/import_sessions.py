import os
from collections.abc import Iterator

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from accounts.models import User
from chat.api.transfer import records_from_lines
from chat.exceptions import ApiError
from chat.services import sessions_import


class Command(BaseCommand):
    help = (
        "Import sessions and messages from an NDJSON file in the format of GET /api/chat/export into "
        "USERNAME's history, as POST /api/chat/import does (no size limit here): one transaction, ids "
        "upsert, a bad line or another user's session imports nothing. A progress bar is shown when "
        "stdout is a terminal."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", metavar="FILE", help="the NDJSON file ('-' is not supported: give a path)")
        parser.add_argument("--user", required=True, metavar="USERNAME", help="whose history receives it")

    def handle(self, *args, file, user, **options):
        owner = User.objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"unknown user: {user}")
        try:
            size = os.path.getsize(file)
            stream = open(file, "rb")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        bar = None
        if self.stdout.isatty():
            bar = tqdm(total=size, unit="B", unit_scale=True, desc="import", file=self.stdout._out)

        def lines() -> Iterator[bytes]:
            for line in stream:
                if bar is not None:
                    bar.update(len(line))
                yield line

        try:
            counts = sessions_import(user=owner, records=records_from_lines(lines()))
        except ApiError as exc:
            raise CommandError(f"nothing imported: {exc.message}") from None
        finally:
            stream.close()
            if bar is not None:
                bar.close()
        self.stdout.write(f"Imported {counts['sessions']} session(s) and {counts['messages']} message(s) for {user}.")
