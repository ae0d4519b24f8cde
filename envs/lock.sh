#!/usr/bin/env bash
# Refreshes the lock from pyproject.toml (run it after changing a dependency there, commit what it writes):
#   envs/requirements.lock  exact versions and SHA-256 hashes of every runtime and test dependency, made by
#                           pip-tools for CPython 3.11 on Linux x86_64 (the machines this project runs on);
#   envs/*.yaml             each package a conda environment names, pinned to the lock's version.
# Extra arguments go to pip-compile, e.g. `envs/lock.sh --upgrade-package numpy` or `envs/lock.sh --upgrade`.
# Without them every version already in the lock is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=.lock-venv  # git-ignored
if [ ! -x "$tools/bin/pip-compile" ]; then
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet "pip-tools==7.7.0"
fi

CUSTOM_COMPILE_COMMAND="envs/lock.sh" "$tools/bin/pip-compile" --quiet \
  --generate-hashes --extra test --strip-extras --allow-unsafe \
  --no-emit-index-url --no-emit-find-links \
  --output-file envs/requirements.lock "$@" pyproject.toml

# The conda environments name the packages their stage needs; pin each to the lock's version. (Snakemake copies
# an env file into .snakemake/conda/ before creating it, so a relative `-c constraints.txt` could not be found.)
"$tools/bin/python" - <<'PY'
import pathlib
import re

pin = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)")
locked = {}
for line in pathlib.Path("envs/requirements.lock").read_text().splitlines():
    if match := pin.match(line):
        locked[match[1].lower().replace("_", "-")] = (match[1], match[2])
entry = re.compile(r"^(\s+- )([A-Za-z0-9_.-]+)(?:==[^\s#]+)?(\s*#.*)?$")
for env_file in sorted(pathlib.Path("envs").glob("*.yaml")):
    lines, in_pip = [], False
    for line in env_file.read_text().splitlines():
        in_pip = in_pip or line.strip() == "- pip:"
        match = entry.match(line) if in_pip else None
        if match and match[2].lower().replace("_", "-") in locked:
            name, version = locked[match[2].lower().replace("_", "-")]
            line = f"{match[1]}{name}=={version}{match[3] or ''}"
        lines.append(line)
    env_file.write_text("\n".join(lines) + "\n")
PY
# envs/slurm.lock: the SLURM executor (extra `slurm`, for cluster runs), locked on top of the main lock: the same
# resolution with the extra added, keeping every version the main lock holds, then only the packages it adds. It is
# installed after the main lock with `--no-deps`; `pip check` confirms its dependencies are the main lock's.
with_slurm=$(mktemp)
trap 'rm -f "$with_slurm"' EXIT
cp envs/requirements.lock "$with_slurm"
CUSTOM_COMPILE_COMMAND="envs/lock.sh" "$tools/bin/pip-compile" --quiet \
  --generate-hashes --extra test --extra slurm --strip-extras --allow-unsafe \
  --no-emit-index-url --no-emit-find-links --output-file "$with_slurm" pyproject.toml
"$tools/bin/python" - "$with_slurm" <<'PY'
import pathlib
import re
import sys

pin = re.compile(r"^([A-Za-z0-9_.-]+)==")
main = {m[1].lower() for line in pathlib.Path("envs/requirements.lock").read_text().splitlines() if (m := pin.match(line))}
blocks, current = [], None
for line in pathlib.Path(sys.argv[1]).read_text().splitlines():
    if match := pin.match(line):
        current = [line] if match[1].lower() not in main else None
        if current is not None:
            blocks.append(current)
    elif current is not None and line.startswith(" "):
        current.append(line)
    else:
        current = None
header = [
    "# The SLURM executor for workflow/profiles/slurm, locked on top of requirements.lock (made by envs/lock.sh).",
    "# Install after the main lock: pip install --require-hashes --no-deps -r envs/slurm.lock && pip check",
]
pathlib.Path("envs/slurm.lock").write_text("\n".join(header + [l for b in blocks for l in b]) + "\n")
PY
echo "envs/requirements.lock: $(grep -cE '^[A-Za-z0-9_.-]+==' envs/requirements.lock) packages pinned with hashes"
echo "envs/slurm.lock: $(grep -cE '^[A-Za-z0-9_.-]+==' envs/slurm.lock) more for the SLURM executor"
