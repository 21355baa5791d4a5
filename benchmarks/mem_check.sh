#!/usr/bin/env bash
# Per-invocation cost of mem_check beside its floors (docs/design.md §4): wall time, CPU time
# and peak RSS of
#   - python -c "import psutil"              the issue's reference (target: within 1.15x)
#   - python -c "import click, nagiosplugin" the contract's own cost, what mem_check can't undercut
#   - mem_check                              the check as Consul runs it
#   - mem_check --top 5                      the one path that imports psutil
# Wall and CPU come from hyperfine when installed, else from /usr/bin/time; peak RSS always
# from /usr/bin/time (hyperfine does not measure memory).
#
# usage: benchmarks/mem_check.sh [RUNS]      (env: PYTHON, MEM_CHECK)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-30}
python=${PYTHON:-$here/.venv/bin/python}
mem_check=${MEM_CHECK:-$here/.venv/bin/mem_check}
[ -x "$mem_check" ] || { echo "no $mem_check: pip install -e . first" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Installed packages run from bytecode compiled at install time; an editable install under
# PYTHONDONTWRITEBYTECODE=1 would recompile mem_check's modules from source on every run
# and bill that to mem_check. Compile the modules it imports (into the ignored __pycache__).
"$python" -m compileall -q "$here/checks/__init__.py" "$here/checks/status.py" \
  "$here/checks/output.py" "$here/checks/adapters.py" "$here/checks/runtime.py" \
  "$here/checks/thresholds.py" "$here/checks/units.py" "$here/checks/mem_check.py" \
  "$here/checks/memory" >/dev/null

names=("import psutil" "import click, nagiosplugin" "mem_check" "mem_check --top 5")
commands=(
  "$python -c 'import psutil'"
  "$python -c 'import click, nagiosplugin'"
  "$mem_check"
  "$mem_check --top 5"
)

# hyperfine: mean wall, mean user+sys over $runs runs (exit 1/2 of a busy host is fine: -i)
if command -v hyperfine >/dev/null; then
  tool=hyperfine
  hyperfine -N -i --warmup 3 --runs "$runs" --style none \
    --export-json "$work/hyperfine.json" "${commands[@]}" >/dev/null
fi

# /usr/bin/time: peak RSS (and wall/CPU too when hyperfine is missing)
for index in "${!commands[@]}"; do
  for _ in $(seq "$runs"); do
    # shellcheck disable=SC2086  # the command strings are split on purpose
    eval /usr/bin/time -f "'%e %U %S %M'" -a -o "$work/time.$index" "${commands[$index]}" \
      >/dev/null 2>&1 || true
  done
done

"$python" - "$work" "${tool:-time}" "$runs" "${names[@]}" <<'PY'
import json, os, statistics, sys

work, tool, runs, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
rows = []
hyper = None
if tool == "hyperfine":
    with open(os.path.join(work, "hyperfine.json")) as handle:
        hyper = json.load(handle)["results"]
for index, name in enumerate(names):
    with open(os.path.join(work, f"time.{index}")) as handle:
        samples = [line.split() for line in handle if line[:1].isdigit()]
    rss = statistics.median(int(s[3]) for s in samples) / 1024
    if hyper:
        wall = hyper[index]["mean"] * 1000
        spread = hyper[index]["stddev"] * 1000
        cpu = (hyper[index]["user"] + hyper[index]["system"]) * 1000
    else:
        walls = [float(s[0]) * 1000 for s in samples]
        wall, spread = statistics.mean(walls), statistics.pstdev(walls)
        cpu = statistics.mean((float(s[1]) + float(s[2])) * 1000 for s in samples)
    rows.append((name, wall, spread, cpu, rss))

psutil_wall, contract_wall = rows[0][1], rows[1][1]
print(f"{runs} runs each, wall and CPU by {tool}, peak RSS (median) by /usr/bin/time")
header = ("command", "wall ms", "±", "CPU ms", "peak RSS MiB", "x psutil", "x click+np")
print(f"{header[0]:<28}{header[1]:>9}{header[2]:>7}{header[3]:>9}{header[4]:>14}"
      f"{header[5]:>10}{header[6]:>12}")
for name, wall, spread, cpu, rss in rows:
    print(f"{name:<28}{wall:>9.1f}{spread:>7.1f}{cpu:>9.1f}{rss:>14.1f}"
          f"{wall / psutil_wall:>10.2f}{wall / contract_wall:>12.2f}")
PY
