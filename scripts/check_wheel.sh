#!/usr/bin/env bash
# The package as a user gets it: build the sdist and wheel, `twine check` them, make sure the wheel
# holds the package and nothing else (no tests, benchmarks, example project, scripts or docs), install
# it into a fresh virtualenv outside the repository and there run the import, the console script and
# the pytest plugin's three fixtures. Classifiers are checked against the index's list (trove-classifiers).
#
# build and twine are installed here, into a throwaway virtualenv, not into an extra: the check then
# needs nothing from `make install`, and the package's published metadata carries no release tooling.
#
# Usage: scripts/check_wheel.sh  (PYTHON=/path/to/python3.x picks the interpreter, default python3)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/bento-wheel-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== build (sdist, then the wheel from it) with $("$python" --version)"
"$python" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet --upgrade pip build twine trove-classifiers
"$work/tools/bin/python" -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 || {
  cat "$work/build.log"
  exit 1
}
ls -1 "$work/dist"
wheel="$(ls "$work"/dist/*.whl)"

echo "== twine check --strict"
"$work/tools/bin/twine" check --strict "$work"/dist/*

echo "== wheel contents and classifiers"
"$work/tools/bin/python" - "$wheel" <<'EOF'
import sys
import zipfile
from email.parser import Parser

from trove_classifiers import classifiers as known

wheel = zipfile.ZipFile(sys.argv[1])
names = wheel.namelist()
dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
metadata = Parser().parsestr(wheel.read(dist_info + "/METADATA").decode())
unknown = [c for c in metadata.get_all("Classifier", []) if c not in known]
if unknown:
    sys.exit(f"classifiers the package index would refuse: {unknown}")
print(f"{len(metadata.get_all('Classifier', []))} classifiers, all known; Requires-Python {metadata['Requires-Python']}")
stray = [name for name in names if not (name.startswith("bento_tasks/") or name.startswith(dist_info + "/"))]
packages = sorted({name.rsplit("/", 1)[0] for name in names if name.startswith("bento_tasks/")})
print(f"{len(names)} files; packages: {', '.join(packages)}")
for required in ("bento_tasks/py.typed", dist_info + "/licenses/LICENSE", dist_info + "/entry_points.txt"):
    if required not in names:
        sys.exit(f"the wheel lacks {required}")
if stray:
    sys.exit("the wheel holds files outside the package:\n  " + "\n  ".join(stray))
print("only bento_tasks/ and its metadata; py.typed, LICENSE and the entry points are there")
EOF

echo "== install the wheel into a fresh virtualenv, outside the repository"
"$python" -m venv "$work/user"
"$work/user/bin/python" -m pip install --quiet "$wheel" pytest
cd "$work"
"$work/user/bin/python" - "$work/user" <<'EOF'
import sys

import bento_tasks

print(f"import bento_tasks: {bento_tasks.__version__} from {bento_tasks.__file__}")
if not bento_tasks.__file__.startswith(sys.argv[1]):
    sys.exit("bento_tasks was not imported from the fresh virtualenv")
EOF
echo "== bento-tasks --help"
"$work/user/bin/bento-tasks" --help

echo "== the pytest plugin's fixtures, in a test of its own"
cat >"$work/test_installed_plugin.py" <<'EOF'
import pytest
import requests

import bento_tasks


def test_bento_outbox_keeps_events_in_memory(bento_outbox):
    """bento_outbox: an event tracked without Redis or keys is in the outbox, as Bento would receive it."""
    bento_tasks.track("signup", "outbox@example.com", fields={"plan": "pro"})
    assert [(e["type"], e["email"], e["fields"]) for e in bento_outbox] == [
        ("signup", "outbox@example.com", {"plan": "pro"})
    ]


def test_bento_sync_posts_before_track_returns(bento_sync):
    """bento_sync: track() has POSTed the event to the fake by the time it returns; a refusal raises."""
    bento_tasks.track("signup", "sync@example.com")
    assert [e["email"] for e in bento_sync.events] == ["sync@example.com"]
    bento_sync.fail(503, times=1)
    with pytest.raises(bento_tasks.BentoError):
        bento_tasks.track("signup", "refused@example.com")


def test_bento_fake_is_a_real_http_server_with_bentos_rules(bento_fake):
    """bento_fake: a real HTTP server that refuses a request without the keys and accepts one with them."""
    url = f"{bento_fake.url}/batch/events"
    body = {"events": [{"type": "signup", "email": "fake@example.com"}]}
    params, headers = {"site_uuid": bento_fake.site_uuid}, {"User-Agent": "check-wheel"}
    assert requests.post(url, params=params, headers=headers, json=body, timeout=5).status_code == 401
    auth = (bento_fake.publishable_key, bento_fake.secret_key)
    answer = requests.post(url, params=params, headers=headers, json=body, auth=auth, timeout=5)
    assert answer.json() == {"results": 1, "failed": 0}
    assert [e["email"] for e in bento_fake.events] == ["fake@example.com"]
EOF
"$work/user/bin/python" -m pytest -q -p no:cacheprovider "$work/test_installed_plugin.py"
