"""The supported-version matrix: the whole test suite on each end of every supported range.

``make matrix`` runs every session; ``nox -s oldest`` or ``nox -s newest`` one corner (CI runs ``oldest``
here and the newest corner as its ``make test``). ``nox -l`` lists the sessions.

Not the Cartesian product: each session is a combination pip can install and a user can run, chosen so
that every Python and every end of every range appears at least once, the two corners are whole, and
each old end also meets the other packages' new ends. What rules combinations out:

- Django 6.x needs Python >= 3.12; Django 4.2 supports Python <= 3.12; marshmallow 4.4 needs Python >= 3.11
  (so Python 3.10's newest is marshmallow 4.3).
- Celery's ``redis`` extra bounds redis-py: Celery 5.4 ``<6``, 5.6 (kombu 5.6) ``<6.5``, 5.7 (kombu 5.7)
  ``>=6.4``. So redis-py 5.x runs with Celery 5.4 and 5.6, redis-py 8.x with Celery 5.7 only.

Each pin takes the newest patch release of that line (``==5.2.*``); kombu, billiard and the rest are
what pip picks for them, printed at the start of each session.
Interpreters come from pyenv (``$PYENV_ROOT/versions/3.1x.y``) or ``python3.1x`` on PATH; none is downloaded.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Callable
from typing import NamedTuple

import nox

nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_venv = "yes"


class Stack(NamedTuple):
    name: str
    python: str
    django: str
    celery: str
    redis: str
    marshmallow: str


MATRIX = [
    Stack("oldest", python="3.10", django="4.2", celery="5.4", redis="5.0", marshmallow="4.0"),
    Stack("py3.10-newest-libraries", python="3.10", django="5.2", celery="5.7", redis="8", marshmallow="4.3"),
    Stack("py3.11-celery5.6", python="3.11", django="4.2", celery="5.6", redis="5.0", marshmallow="4.4"),
    Stack("py3.12-django4.2-celery5.7", python="3.12", django="4.2", celery="5.7", redis="8", marshmallow="4.0"),
    Stack("py3.12-django6.1-celery5.4", python="3.12", django="6.1", celery="5.4", redis="5.0", marshmallow="4.0"),
    Stack("py3.13-celery5.6", python="3.13", django="5.2", celery="5.6", redis="5.0", marshmallow="4.0"),
    Stack("newest", python="3.13", django="6.1", celery="5.7", redis="8", marshmallow="4.4"),
]

PACKAGES = ("django", "celery", "kombu", "redis", "marshmallow")
VERSIONS = (
    "import importlib.metadata as m, sys\n"
    f"print('python', sys.version.split()[0], *(p + ' ' + m.version(p) for p in {PACKAGES}))"
)


def interpreter(version: str) -> str:
    """The newest pyenv build of ``version`` (e.g. 3.10 -> ~/.pyenv/versions/3.10.13/bin/python3.10)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    builds: dict[int, str] = {}
    for path in glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")):
        release = path.split(os.sep)[-3]  # 3.10.13; skips builds such as 3.13.0t or 3.12-dev
        if re.fullmatch(r"\d+\.\d+\.\d+", release):
            builds[int(release.rsplit(".", 1)[1])] = path
    return builds[max(builds)] if builds else shutil.which(f"python{version}") or version


def suite(stack: Stack) -> Callable[[nox.Session], None]:
    def run(session: nox.Session) -> None:
        session.install(
            "-e",
            ".[test]",
            f"django=={stack.django}.*",
            f"celery[redis]=={stack.celery}.*",
            f"redis=={stack.redis}.*",
            f"marshmallow=={stack.marshmallow}.*",
        )
        session.run("python", "-c", VERSIONS)
        session.run("python", "-m", "pytest", *session.posargs)

    run.__doc__ = (
        f"Python {stack.python}, Django {stack.django}, Celery {stack.celery}, redis-py {stack.redis}, "
        f"marshmallow {stack.marshmallow}: the full suite."
    )
    return run


for _stack in MATRIX:
    nox.session(name=_stack.name, python=interpreter(_stack.python))(suite(_stack))
