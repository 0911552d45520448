#!/usr/bin/env bash
# tools/fuzz.sh: libFuzzer on the text readers behind csv2h5, for a bounded time.
#
#   bash tools/fuzz.sh [SECONDS]      (default 60; not part of the CI run)
#
# Builds tools/fuzz/fuzz_csv_import.cpp with clang (-fsanitize=fuzzer,address,
# undefined) into build-fuzz/, seeds the corpus with small valid and broken
# inputs, fuzzes for SECONDS and prints the executions and the crashes found
# (each crash is saved as build-fuzz/crash-*; rerun one with
# build-fuzz/fuzz_csv_import FILE). Exit status 1 when a crash was found.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/build-fuzz
SECONDS_TO_RUN=${1:-60}
CXX=${FUZZ_CXX:-clang++}
if ! command -v "$CXX" >/dev/null; then
  echo "fuzz.sh: $CXX not found; install clang and libclang-rt-dev (Debian: apt-get install clang libclang-rt-dev)" >&2
  exit 2
fi
mkdir -p "$OUT/corpus"
HDF5_CFLAGS=$(pkg-config --cflags hdf5 2>/dev/null || echo -I/usr/include/hdf5/serial)
HDF5_LIBS=$(pkg-config --libs hdf5 2>/dev/null || echo "-L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5")

echo "== building $OUT/fuzz_csv_import"
# shellcheck disable=SC2086
"$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -DSASREC_VERSION='"fuzz"' -I"$ROOT/include" $HDF5_CFLAGS \
  "$ROOT/tools/fuzz/fuzz_csv_import.cpp" "$ROOT"/src/data/*.cpp \
  $HDF5_LIBS -lpthread -o "$OUT/fuzz_csv_import"

# Seeds: one of each format, and the broken inputs of tests/test_csv2h5.cpp.
printf 'user_id,item_id,timestamp\nA1,B9,1367884800\nA1,B8,2013-05-07 10:00:00\nA2,B9,1.5e9\n' >"$OUT/corpus/csv"
printf 'user_id\titem_id\nu\ti\nu\tj\n' >"$OUT/corpus/tsv"
printf '"u,1",i\n"u,1","i ""x"""\n' >"$OUT/corpus/quoted"
printf '1 2\n1 3\n2 3\n' >"$OUT/corpus/pairs"
printf '1 2 3 4\n2 3 4\n' >"$OUT/corpus/seq"
printf 'user_id,item_id\na,b\nc\n,b\n"a,b\n' >"$OUT/corpus/broken"
printf '\xef\xbb\xbfuser,item,time\r\nx,y,2020-01-01T00:00:00Z\r\n' >"$OUT/corpus/bom_crlf"

echo "== fuzzing for ${SECONDS_TO_RUN}s"
cd "$OUT"
rm -f crash-* leak-* timeout-* oom-*
set +e
./fuzz_csv_import -max_total_time="$SECONDS_TO_RUN" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$OUT/" corpus >fuzz.log 2>&1
status=$?
set -e
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' fuzz.log | grep -o '[0-9]*$' || echo "?")
crashes=$(find "$OUT" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
echo "fuzz: ${SECONDS_TO_RUN}s, ${execs} executions, ${crashes} crash(es) (libFuzzer exit ${status}); log: $OUT/fuzz.log"
if [ "$crashes" -gt 0 ] || [ "$status" -ne 0 ]; then
  tail -40 fuzz.log
  exit 1
fi
