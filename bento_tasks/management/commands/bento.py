"""``manage.py bento status|dead|flush|resume|relay|metrics ...``: the ``bento-tasks`` CLI inside a Django project.

Everything after ``bento`` goes to ``bento_tasks.cli.main``: the same parser, the same functions, the
same output and exit codes, with the project's settings (and its Celery app, for ``flush``) loaded.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ... import cli


class Command(BaseCommand):
    help = (
        "bento-tasks operations with this project's settings: status [--json] [--check --max-age N], "
        "dead list|replay|purge, flush [--json], resume, relay [--database ALIAS] [--json], metrics [--port N]. "
        "`manage.py bento status --help` shows a command's options."
    )
    # The CLI reads Redis, not the database: no system checks first, like `bento-tasks` itself.
    requires_system_checks = ()

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER, metavar="command", help="a bento-tasks command")

    def handle(self, *args: str, **options: Any) -> None:
        with ExitStack() as stack:
            # call_command(stdout=..., stderr=...) captures what the CLI prints, as for Django's own commands.
            if options.get("stdout") is not None:
                stack.enter_context(redirect_stdout(options["stdout"]))
            if options.get("stderr") is not None:
                stack.enter_context(redirect_stderr(options["stderr"]))
            code = cli.main(list(args))
        if code:
            sys.exit(code)  # as `makemigrations --check` does: the exit status is the answer
