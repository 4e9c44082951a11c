#!/bin/bash
# Submits a sharded step as a Slurm job array and its merge as a job that
# starts once every task succeeded (--dependency=afterok). Prints both job ids.
#
#   scripts/slurm/submit.sh landscape|sweep EXP N [modeconn flags...]
#
# e.g. scripts/slurm/submit.sh landscape experiments/fm 16 --grid 41 --threads 2
# The merge job merges only this step's result (--only plane, random,
# random-1d, along or ensemble, read from the flags), so several arrays can
# run on one experiment at once.
# Environment: MODECONN (the binary, default `modeconn` on PATH), SBATCH_ARGS
# (extra sbatch options for the array, e.g. "--partition=gpu --gres=gpu:1"),
# SBATCH_MERGE_ARGS (the same for the merge job).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 landscape|sweep EXP N [modeconn flags...]" >&2
    exit 2
fi
what=$1 exp=$2 n=$3
shift 3
case $what in landscape | sweep) ;; *) echo "$0: the step is landscape or sweep, not '$what'" >&2; exit 2 ;; esac
dir=$(cd "$(dirname "$0")" && pwd)
# The result the merge job joins (other arrays may still run on the experiment).
only=plane
[ "$what" = sweep ] && only=along
prev=
for a in "$@"; do
    case "$prev=$a" in
        --plane=random | --plane=random-1d) only=$a ;;
        *=--plane=random | *=--plane=random-1d) only=${a#--plane=} ;;
        *=--ensemble | *=--ensemble=*) only=ensemble ;;
    esac
    prev=$a
done
# shellcheck disable=SC2086
array=$(EXP=$exp SHARDS=$n sbatch --parsable ${SBATCH_ARGS:-} --export=ALL,EXP="$exp",SHARDS="$n" \
    --array=0-$((n - 1)) "$dir/$what.sbatch" "$@")
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_MERGE_ARGS:-} --export=ALL,EXP="$exp" \
    --dependency=afterok:"${array%%;*}" "$dir/merge.sbatch" --only "$only")
echo "array ${array%%;*}, merge ${merge%%;*}"
