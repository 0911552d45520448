#!/usr/bin/env bash
# tools/plot_metrics.sh: metrics JSON-lines files -> one PNG with three panels
# against epoch: training loss, valid NDCG@10 and valid HR@10; one line per run.
#
# Usage: bash tools/plot_metrics.sh [--protocol full|sampled] [--title TEXT] OUT.png [LABEL=]METRICS.jsonl ...
#
# A run's label is LABEL when given, else the name of the folder holding its
# metrics file (runs/beauty-ce/metrics.jsonl -> beauty-ce). Uses the
# "train_epoch" events (loss) and the "eval" events of split valid (the given
# protocol, default full). Needs jq and gnuplot (Debian: jq gnuplot-nox).
set -euo pipefail

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "plot_metrics: $*" >&2; exit 2; }

VERSION=0.1.0  # the project's version (CMakeLists.txt); tests/test_cli.cpp checks that they agree
protocol=full
title="SASRec training"
args=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --version) echo "plot_metrics $VERSION"; exit 0 ;;
    --protocol) protocol=${2:?--protocol needs full or sampled}; shift 2 ;;
    --title) title=${2:?--title needs a text}; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
((${#args[@]} >= 2)) || { usage >&2; exit 2; }
[[ $protocol == full || $protocol == sampled ]] || die "--protocol must be full or sampled, got '$protocol'"
for tool in jq gnuplot; do
  command -v "$tool" >/dev/null || die "$tool not found; install it (Debian: apt-get install jq gnuplot-nox)"
done

out=${args[0]}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

loss_plot=() ndcg_plot=() hr_plot=()
i=0
for spec in "${args[@]:1}"; do
  file=${spec#*=}
  if [[ $spec == *=* ]]; then label=${spec%%=*}; else label=$(basename "$(dirname "$(realpath "$file")")"); fi
  [[ -r $file ]] || die "$file: cannot read the metrics file"
  # An epoch with no step taken has loss null (no loss), an evaluation of no user no figure: not drawn.
  jq -r 'select(.event == "train_epoch" and .loss != null) | "\(.epoch) \(.loss)"' "$file" > "$tmp/loss$i" \
    || die "$file: not a JSON-lines metrics file"
  jq -r --arg p "$protocol" \
    'select(.event == "eval" and .split == "valid" and .protocol == $p and .users != 0) | "\(.epoch) \(.["ndcg@10"] // "NaN") \(.["hr@10"] // "NaN")"' \
    "$file" > "$tmp/eval$i"
  label=${label//\"/}
  [[ -s $tmp/loss$i ]] && loss_plot+=("'$tmp/loss$i' using 1:2 with linespoints title \"$label\"")
  [[ -s $tmp/eval$i ]] && ndcg_plot+=("'$tmp/eval$i' using 1:2 with linespoints title \"$label\"")
  [[ -s $tmp/eval$i ]] && hr_plot+=("'$tmp/eval$i' using 1:3 with linespoints title \"$label\"")
  i=$((i + 1))
done
((${#loss_plot[@]})) || die "no train_epoch event in any of the files"

# One panel: a plot command, or an empty frame saying there is nothing to draw.
panel() {
  local ylabel=$1; shift
  echo "set ylabel '$ylabel'"
  if (($#)); then
    local IFS=,; echo "plot $*"
  else
    echo "set label 1 'no valid $protocol evaluation in these files' at graph 0.5, 0.5 center"
    echo "plot [0:1] [0:1] NaN notitle"
    echo "unset label 1"
  fi
}

{
  echo "set terminal pngcairo noenhanced size 1500,460 font ',10'"
  echo "set output '$out'"
  echo "set multiplot layout 1,3 title \"${title//\"/} (valid: $protocol ranking)\""
  echo "set xlabel 'epoch'; set grid; set key bottom right; set datafile missing 'NaN'"
  echo "set key top right"
  panel "training loss" "${loss_plot[@]}"
  echo "set key bottom right"
  panel "valid NDCG@10" "${ndcg_plot[@]}"
  panel "valid HR@10" "${hr_plot[@]}"
  echo "unset multiplot"
} > "$tmp/plot.gp"
gnuplot "$tmp/plot.gp" 2> >(grep -v "^Warning: empty . range" >&2) || die "gnuplot failed"
echo "plot_metrics: wrote $out"
