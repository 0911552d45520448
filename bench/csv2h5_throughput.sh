#!/usr/bin/env bash
# csv2h5_throughput.sh: measures csv2h5 on a >= 1 GB synthetic csv: MB/s and
# peak RSS (GNU time -v), plus the RSS per row to extrapolate to 100M rows.
# Usage: bench/csv2h5_throughput.sh [BUILD_DIR] [WORK_DIR]
#   BUILD_DIR: where csv2h5 and sasrec_synth are built (default: build)
#   WORK_DIR:  scratch folder for the ~1 GB csv and the store (default: a mktemp dir, removed)
# Size knobs (env): USERS (2000000), ITEMS (1000000), MEAN_LENGTH (18), ORDER (shuffled).
# REUSE_CSV=1 keeps an existing WORK_DIR/synth.csv; RUNS (1) times csv2h5 that many times.
# The output is removed before each run: replacing an existing store adds the
# file system's cost of freeing the old file (0.5-1 s for ~0.5 GB on ext4 with
# discard), which is not csv2h5's work.
set -euo pipefail

BUILD=${1:-build}
WORK=${2:-}
USERS=${USERS:-2000000}
ITEMS=${ITEMS:-1000000}
MEAN_LENGTH=${MEAN_LENGTH:-18}
ORDER=${ORDER:-shuffled}

for tool in csv2h5 sasrec_synth; do
  [[ -x "$BUILD/$tool" ]] || { echo "csv2h5_throughput: $BUILD/$tool not found; build it first (cmake --build $BUILD --target $tool)" >&2; exit 2; }
done
[[ -x /usr/bin/time ]] || { echo "csv2h5_throughput: /usr/bin/time missing; apt-get install time" >&2; exit 2; }
if [[ -z "$WORK" ]]; then
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
CSV="$WORK/synth.csv"
H5="$WORK/synth.h5"

if [[ "${REUSE_CSV:-0}" == 1 && -s "$CSV" ]]; then
  echo "== reusing $CSV"
else
  echo "== generating $USERS users x $ITEMS items, mean length $MEAN_LENGTH, rows $ORDER"
  /usr/bin/time -f "sasrec_synth: %e s, peak RSS %M KiB" \
    "$BUILD/sasrec_synth" --users "$USERS" --items "$ITEMS" --mean-length "$MEAN_LENGTH" \
    --format csv --order "$ORDER" --seed 1 --out "$CSV"
fi
BYTES=$(stat -c %s "$CSV")
ROWS=$(( $(wc -l < "$CSV") - 1 ))
echo "csv: $BYTES bytes, $ROWS rows"

echo "== csv2h5"
# Drop the page cache effect partly: read the file once so both runs see a warm cache.
cat "$CSV" > /dev/null
CMD=("$BUILD/csv2h5" "$CSV" "$H5")
echo "command: ${CMD[*]}"
for run in $(seq "${RUNS:-1}"); do
  rm -f "$H5"
  /usr/bin/time -v "${CMD[@]}" 2> "$WORK/time.txt"
  WALL=$(grep "Elapsed (wall clock)" "$WORK/time.txt" | awk '{print $NF}')
  RSS_KB=$(grep "Maximum resident set size" "$WORK/time.txt" | awk '{print $NF}')
  CPU=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "user %.2f s, sys %.2f s", u, s}' "$WORK/time.txt")
  SECS=$(echo "$WALL" | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
  awk -v b="$BYTES" -v s="$SECS" -v r="$RSS_KB" -v n="$ROWS" -v cpu="$CPU" 'BEGIN {
    printf "wall %.2f s (%s), %.1f MB/s (input bytes / wall time), peak RSS %.2f GiB\n", s, cpu, b / 1e6 / s, r / 1048576;
    printf "peak RSS per row: %.1f bytes; extrapolated to 100M rows: %.1f GiB\n", r * 1024 / n, r * 1024 / n * 1e8 / 1073741824;
  }'
done
ls -l "$H5"
