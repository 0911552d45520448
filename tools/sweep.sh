#!/usr/bin/env bash
# tools/sweep.sh: a hyperparameter sweep for sasrec_ddp: a grid and/or a list
# of --set overrides, one training per point, in series, each in its own
# folder; then one table of every point (best valid epoch, its test figures).
#
# Usage: bash tools/sweep.sh [options] CONFIG OUT_DIR     run the points not yet done, then the table
#        bash tools/sweep.sh --table OUT_DIR               the table only
#
#   --grid KEY=V1,V2,...  one axis; the points are the product of all axes (repeatable)
#   --points FILE         one point a line, KEY=VALUE overrides separated by spaces ('#' starts a comment);
#                         each line is combined with every grid point
#   --seeds S1,S2,...     the same as --grid train.seed=S1,S2,...; the table then gives mean and spread
#   --set KEY=VALUE       an override every point gets (repeatable); '{dir}' in a value is the point's folder,
#                         e.g. --set checkpoint.dir={dir}/ckpt
#   --bin PATH            the trainer (default: $SASREC_DDP, else the sasrec_ddp beside this script or in
#                         build/ of its checkout, else the one on PATH)
#   --launcher "CMD"      put in front of every training, e.g. "nice -n 19" or "mpirun -np 2"
#   --slurm               write OUT_DIR/sweep.sbatch (a job array, one task per point not yet done) and submit it
#   --no-submit           with --slurm: write the script and print the sbatch command, do not submit
#   --sbatch "ARGS"       extra sbatch options for --slurm, e.g. "--time=1:00:00 --cpus-per-task=4"
#   --dry-run             list the points and their folders; run nothing
#
# Each point runs in OUT_DIR/NAME/ (NAME spells its overrides): metrics.jsonl,
# log.txt (the trainer's output), overrides.txt and exit_code. A point is done
# when its metrics file ends with a summary event and the trainer exited 0;
# done points are never rerun, so an interrupted sweep continues with the next
# point when started again (the interrupted point starts over). Needs bash and jq.
set -euo pipefail
set -f  # no globbing: overrides such as eval.ks=[1,10] stay as written

usage() { sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "sweep: $*" >&2; exit 2; }

VERSION=0.1.0  # the project's version (CMakeLists.txt); tests/test_sweep.cpp checks that they agree
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"

grids=() point_files=() fixed=() bin="" launcher="" slurm=0 submit=1 sbatch_args="" dry=0 table_only=0 run_point=""
args=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --version) echo "sweep $VERSION"; exit 0 ;;
    --grid) [[ ${2:-} == *=* ]] || die "--grid needs KEY=V1,V2,..."; grids+=("$2"); shift 2 ;;
    --points) [[ -r ${2:-} ]] || die "--points: cannot read '${2:-}'"; point_files+=("$2"); shift 2 ;;
    --seeds) [[ -n ${2:-} ]] || die "--seeds needs S1,S2,..."; grids+=("train.seed=$2"); shift 2 ;;
    --set) [[ ${2:-} == *=* ]] || die "--set needs KEY=VALUE"; fixed+=("$2"); shift 2 ;;
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --launcher) launcher=${2?--launcher needs a command}; shift 2 ;;
    --slurm) slurm=1; shift ;;
    --no-submit) submit=0; shift ;;
    --sbatch) sbatch_args=${2?--sbatch needs options}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --table) table_only=1; shift ;;
    --run-point) run_point=${2:?--run-point needs an index}; shift 2 ;;  # one point of OUT_DIR (the sbatch script)
    -*) die "unknown option '$1' (see --help)" ;;
    *) args+=("$1"); shift ;;
  esac
done
command -v jq >/dev/null || die "jq not found; install it (Debian: apt-get install jq)"

# ---- the table -------------------------------------------------------------------
# One row per point of OUT_DIR/points.tsv: status, epochs, best epoch, its valid
# NDCG@10 and test HR@10 / NDCG@10 (the first protocol, full by default), minutes.
# Points that differ only in train.seed form a group: mean and sample standard deviation.
table() {
  local out=$1 name overrides m status line ep best v hr nd min rows=()
  echo "| point | status | epochs | best epoch | valid NDCG@10 | test HR@10 | test NDCG@10 | minutes |"
  echo "|---|---|---|---|---|---|---|---|"
  while IFS=$'\t' read -r name overrides; do
    m="$out/$name/metrics.jsonl"
    status=$(point_status "$out/$name")
    if [[ $status == done* ]]; then
      line=$(jq -r --arg wall "$(cat "$out/$name/wall_seconds" 2>/dev/null || echo 0)" '
        select(.event == "summary") |
        (to_entries | map(select(.key | startswith("best_test_"))) | first.value) as $t |
        (to_entries | map(select(.key | startswith("best_valid_"))) | first.value) as $v |
        [.epochs, .best_epoch, $v["ndcg@10"], $t["hr@10"], $t["ndcg@10"],
         ((if ($wall | tonumber) > 0 then ($wall | tonumber) else .seconds end) / 60)] | @tsv' "$m" | tail -n 1)
      rows+=("$overrides"$'\t'"$line")
      IFS=$'\t' read -r ep best v hr nd min <<<"$line"
      printf '| %s | %s | %s | %s | %.4f | %.4f | %.4f | %.1f |\n' "${overrides:-(config)}" "$status" "$ep" "$best" \
        "$v" "$hr" "$nd" "$min"
    else
      printf '| %s | %s | | | | | | |\n' "${overrides:-(config)}" "$status"
    fi
  done <"$out/points.tsv"
  ((${#rows[@]})) || return 0
  # Seed groups: the overrides without train.seed=... as the key.
  printf '%s\n' "${rows[@]}" | awk -F'\t' '
    { key = $1; gsub(/(^| )train\.seed=[^ ]*/, "", key); sub(/^ /, "", key); if (key == "") key = "(config)"
      n[key]++; order[key] = order[key] ? order[key] : ++groups
      hr[key] += $5; hr2[key] += $5 * $5; nd[key] += $6; nd2[key] += $6 * $6; mn[key] += $7
    }
    function sd(s, s2, k) { return k > 1 ? sqrt(((s2 - s * s / k) > 0 ? (s2 - s * s / k) : 0) / (k - 1)) : 0 }
    END {
      multi = 0; for (k in n) if (n[k] > 1) multi = 1
      if (!multi) exit
      print ""
      print "| point (over seeds) | runs | test HR@10 mean +- sd | test NDCG@10 mean +- sd | minutes per run |"
      print "|---|---|---|---|---|"
      for (g = 1; g <= groups; g++) for (k in order) if (order[k] == g && n[k] > 1)
        printf "| %s | %d | %.4f +- %.4f | %.4f +- %.4f | %.1f |\n", k, n[k], hr[k] / n[k], sd(hr[k], hr2[k], n[k]),
          nd[k] / n[k], sd(nd[k], nd2[k], n[k]), mn[k] / n[k]
    }'
}

# done | done (early stop) | interrupted | failed (exit N) | unfinished | not run
point_status() {
  local dir=$1
  [[ -d $dir ]] || { echo "not run"; return; }
  local code
  code=$(cat "$dir/exit_code" 2>/dev/null || echo "")
  if [[ $code == 0 ]] && [[ -s $dir/metrics.jsonl ]] &&
     [[ $(tail -n 1 "$dir/metrics.jsonl" | jq -r '.event' 2>/dev/null) == summary ]]; then
    if [[ $(tail -n 1 "$dir/metrics.jsonl" | jq -r '.early_stopped') == true ]]; then echo "done (early stop)"
    else echo "done"; fi
  elif [[ $code == 3 ]]; then echo "interrupted"
  elif [[ -n $code ]]; then echo "failed (exit $code)"
  else echo "unfinished"; fi
}

# ---- one point ---------------------------------------------------------------------
run_one() {  # OUT_DIR NAME OVERRIDES
  local out=$1 name=$2 overrides=$3 dir="$1/$2" status
  status=$(point_status "$dir")
  if [[ $status == done* ]]; then echo "sweep: $name: $status, skipped"; return 0; fi
  rm -rf "$dir"
  mkdir -p "$dir"
  local sets=() kv
  for kv in "${fixed[@]}" $overrides; do sets+=(--set "${kv//\{dir\}/$dir}"); done
  sets+=(--set "output.metrics=$dir/metrics.jsonl" --set output.progress=lines)
  printf '%s\n' "$overrides" >"$dir/overrides.txt"
  echo "sweep: $name: running ($(date '+%F %T'))"
  local start=$SECONDS code=0
  # shellcheck disable=SC2086  # the launcher is words on purpose
  $launcher "$bin" "$config" "${sets[@]}" >"$dir/log.txt" 2>&1 || code=$?
  echo $((SECONDS - start)) >"$dir/wall_seconds"
  echo "$code" >"$dir/exit_code"
  echo "sweep: $name: $(point_status "$dir") in $(((SECONDS - start) / 60)) min; log $dir/log.txt"
  # An interrupted training (exit 3, SIGINT/SIGTERM) ends the sweep: its point is not done.
  ((code != 3)) || { echo "sweep: interrupted; run the same command again to continue" >&2; exit 3; }
  return 0
}

# A point's folder name: its overrides, spelled safely; a hash where long.
point_name() {
  local s=${1:-base}
  s=${s// /,}
  s=${s//[^A-Za-z0-9._=,+-]/_}
  if ((${#s} > 96)); then s="${s:0:80}-$(printf '%s' "$1" | cksum | cut -d' ' -f1)"; fi
  echo "$s"
}

# ---- what to run --------------------------------------------------------------------
if ((table_only)); then
  ((${#args[@]} == 1)) || die "--table takes OUT_DIR only"
  [[ -r ${args[0]}/points.tsv ]] || die "${args[0]}: no points.tsv, not a sweep folder"
  table "${args[0]}"
  exit 0
fi
if [[ -n $run_point ]]; then  # one point, from the folder's saved settings (the sbatch script)
  ((${#args[@]} == 1)) || die "--run-point takes OUT_DIR only"
  out=${args[0]}
  # shellcheck source=/dev/null
  source "$out/sweep.conf"
  line=$(sed -n "$((run_point + 1))p" "$out/points.tsv")
  [[ -n $line ]] || die "$out/points.tsv has no point $run_point"
  run_one "$out" "${line%%$'\t'*}" "${line#*$'\t'}"
  exit 0
fi
((${#args[@]} == 2)) || { usage >&2; exit 2; }
config=${args[0]} out=${args[1]}
[[ -r $config ]] || die "$config: cannot read the config"
config=$(realpath "$config")
if [[ -z $bin ]]; then
  bin=${SASREC_DDP:-}
  for b in "$HERE/sasrec_ddp" "$HERE/../build/sasrec_ddp"; do  # installed beside it (sasrec_sweep), or a checkout
    [[ -n $bin || ! -x $b ]] || bin=$(realpath "$b")
  done
  [[ -n $bin ]] || bin=$(command -v sasrec_ddp || true)
  [[ -n $bin ]] || die "no sasrec_ddp found: build it (bash tools/dev.sh build) or give --bin PATH"
fi
[[ -x $bin ]] || bin=$(command -v "$bin" || true)
[[ -n $bin && -x $bin ]] || die "--bin: not an executable"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

# The points: every grid point times every line of the --points files.
points=("")
for g in "${grids[@]}"; do
  key=${g%%=*} values=${g#*=} next=()
  [[ -n $values ]] || die "--grid $g: no values"
  IFS=',' read -r -a vs <<<"$values"
  for p in "${points[@]}"; do for v in "${vs[@]}"; do next+=("${p:+$p }$key=$v"); done; done
  points=("${next[@]}")
done
if ((${#point_files[@]})); then
  lines=()
  for f in "${point_files[@]}"; do
    while IFS= read -r l || [[ -n $l ]]; do
      l=${l%%#*}
      read -r -a words <<<"$l" || true
      ((${#words[@]})) || continue
      l="${words[*]}"  # spaces squeezed
      for kv in $l; do [[ $kv == *=* ]] || die "$f: '$kv' is not KEY=VALUE"; done
      lines+=("$l")
    done <"$f"
  done
  ((${#lines[@]})) || die "the --points files hold no point"
  next=()
  for p in "${points[@]}"; do for l in "${lines[@]}"; do next+=("${l}${p:+ $p}"); done; done
  points=("${next[@]}")
fi

mkdir -p "$out"
out=$(realpath "$out")
: >"$out/points.tsv.tmp"
declare -A seen=()
for p in "${points[@]}"; do
  name=$(point_name "$p")
  [[ -z ${seen[$name]:-} ]] || die "two points have the same overrides: '$p'"
  seen[$name]=1
  printf '%s\t%s\n' "$name" "$p" >>"$out/points.tsv.tmp"
done
mv "$out/points.tsv.tmp" "$out/points.tsv"
{
  printf 'config=%q\nbin=%q\nlauncher=%q\n' "$config" "$bin" "$launcher"
  printf 'fixed=('; for f in "${fixed[@]}"; do printf '%q ' "$f"; done; printf ')\n'
} >"$out/sweep.conf"

n=${#points[@]}
if ((dry)); then
  echo "sweep: $n point(s) in $out:"
  while IFS=$'\t' read -r name p; do echo "  $name  [$(point_status "$out/$name")]  ${p:-(config)}"; done <"$out/points.tsv"
  exit 0
fi

if ((slurm)); then
  todo=() i=0
  while IFS=$'\t' read -r name p; do
    [[ $(point_status "$out/$name") == done* ]] || todo+=("$i")
    i=$((i + 1))
  done <"$out/points.tsv"
  if ((${#todo[@]} == 0)); then echo "sweep: every point is done"; table "$out"; exit 0; fi
  array=$(IFS=,; echo "${todo[*]}")
  {
    echo "#!/usr/bin/env bash"
    echo "#SBATCH --job-name=sasrec-sweep"
    echo "#SBATCH --array=$array"
    echo "#SBATCH --output=$out/slurm-%A_%a.out"
    for a in $sbatch_args; do echo "#SBATCH $a"; done
    echo "# One point of the sweep per array task; afterwards: bash $SELF --table $out"
    echo "export OMP_WAIT_POLICY=\${OMP_WAIT_POLICY:-passive}"
    # shellcheck disable=SC2016  # expanded by the sbatch script, not here
    printf 'exec bash %q --run-point "$SLURM_ARRAY_TASK_ID" %q\n' "$SELF" "$out"
  } >"$out/sweep.sbatch"
  echo "sweep: wrote $out/sweep.sbatch (${#todo[@]} of $n point(s) to run: array $array)"
  if ((submit)); then
    command -v sbatch >/dev/null || die "sbatch not found: submit $out/sweep.sbatch on the cluster"
    sbatch "$out/sweep.sbatch"
  else
    echo "submit with: sbatch $out/sweep.sbatch; then the table: bash $SELF --table $out"
  fi
  exit 0
fi

trap 'echo "sweep: interrupted; run the same command again to continue" >&2; exit 3' INT TERM
i=0
while IFS=$'\t' read -r name p; do
  i=$((i + 1))
  echo "sweep: point $i of $n"
  run_one "$out" "$name" "$p" </dev/null
done <"$out/points.tsv"
table "$out" | tee "$out/results.md"
