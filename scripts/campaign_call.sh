#!/usr/bin/env bash
# One device call of a multi-call study piece on the GPU machine: the same command every call.
#
#   bash scripts/campaign_call.sh STUDY SEED [KEY=VALUE ...]      carrying .data/stage/manifest.json
#                                                                 and the next part(s) while any is missing
# Each call: take whatever parts are carried into /tmp/headless-stage (`headless stage pull`); if the
# corpus is complete (`headless stage check`), run or resume BOTH twins of pretraining seed SEED one
# after the other on this machine (scripts/reproduce_gpu.sh STUDY both, stopped cleanly at WALL
# seconds, default 540); otherwise say which parts are still missing and stop with 0, so the next
# call carries them.  Calls must follow each other within 30 s (the machine then stays up and
# /tmp with it); after a gap the staging starts again, and a piece restarts from nothing.
# VANILLA_HF=1: once the twin(s) are done, the same seed's vanilla twin with HF's head at every
# position (the paper's baseline, `vanilla_pretrain=[objective.loss_implementation=hf]`) in the time
# left of WALL, resumed by the next call like the others; its piece is in $OUT/STUDY-hf-head-vanilla.tgz
# (results/STUDY-hf-head/ without $OUT), apart from the masked-head vanilla's, whose file name it
# shares: merge each vanilla with the headless piece in its own campaign folder.
# A study whose data fits one call (multilingual: .data/multilingual + .data/multilingual-extra.tar.xz,
# 24 MB) needs no staging: when .data/STUDY was carried, the data is read from it.
# FLAVOUR=headless|vanilla: one twin instead of both (a seed whose other twin a past session made);
# FLAVOUR=hf-head: the HF-head vanilla alone. SEED may be a comma list (1,2): each seed's twins in
# turn, in the time left of WALL, so that no call idles after a short resumed piece; a twin needs
# ~530-640 s at the multilingual defaults, so plan whole twins per session (a machine that goes back
# takes its unfinished run with it). An item SEED:WHAT (WHAT: both, headless, vanilla or hf-head)
# names its own twin(s): "2:vanilla,1:hf-head,2:hf-head" runs a session's leftover twins of several
# seeds with one command repeated in every call.
# TOKENIZERS=ARCHIVE: the tokenizer(s) a campaign's first pieces trained (HF tokenizers' training is
# not reproducible), committed with the campaign as docs/results/<campaign>/tokenizers.tar.xz and
# unpacked into runs/reproduce/STUDY/ first: later seeds and twins, in other sessions, then prepare
# the same data and their pieces merge.
# Results: $OUT/STUDY-both.tgz (scripts/reproduce_gpu.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
STUDY=${1:?study}; SEED=${2:?seed}; shift 2
STAGE=${STAGE:-.data/stage}; DEST=${DEST:-/tmp/headless-stage}
export PYTHONPATH=$([ -d /tmp/site ] && echo /tmp/site:)src
WALL=${WALL:-540}
[[ "$WALL" =~ ^[0-9]+$ ]] || { echo "campaign_call.sh: WALL must be whole seconds, got '$WALL'"; exit 2; }
FLAVOUR=${FLAVOUR:-both}
case "$FLAVOUR" in both|headless|vanilla|hf-head) ;;
  *) echo "campaign_call.sh: FLAVOUR must be both, headless, vanilla or hf-head, got '$FLAVOUR'"; exit 2;; esac
ITEM='[0-9]+(:(both|headless|vanilla|hf-head))?'
[[ "$SEED" =~ ^$ITEM(,$ITEM)*$ ]] || {
  echo "campaign_call.sh: SEED must be a seed or a comma list (1,2), each seed optionally with :both, :headless, :vanilla or :hf-head, got '$SEED'"; exit 2; }
if [ -n "${TOKENIZERS:-}" ]; then  # into the work directory of scripts/reproduce_gpu.sh
  [ -f "$TOKENIZERS" ] || { echo "campaign_call.sh: TOKENIZERS=$TOKENIZERS is not a file"; exit 2; }
  STUDY_WORK=${WORK_DIR:-runs/reproduce}/$STUDY
  mkdir -p "$STUDY_WORK" && tar -xJf "$TOKENIZERS" -C "$STUDY_WORK" || exit 2
  echo "campaign_call.sh: the tokenizers of $TOKENIZERS in $STUDY_WORK/tokenizers"
fi
# the study's own folder first: a warm machine may keep another study's stage manifest
if [ -d ".data/$STUDY" ]; then  # no staging: the study's data carried whole, as .data/STUDY
  DATA=.data/$STUDY
elif [ ! -f "$STAGE/manifest.json" ]; then
  echo "campaign_call.sh: neither $STAGE/manifest.json nor .data/$STUDY was carried"; exit 2
else
  if ls "$STAGE"/*.part >/dev/null 2>&1; then
    python3 -m headless stage pull "$STAGE" "$DEST" || exit $?
  elif [ ! -d "$DEST" ]; then  # no part carried and nothing staged: not the machine of the last call
    echo "campaign_call.sh: nothing is staged on this machine and no part was carried: a fresh machine (the last"
    echo "one went back, with its staged corpus and its runs, after a gap over 30 s between calls); carry every part"
    echo "again, one per call from the first, and the unfinished twin starts over"
    exit 0
  fi
  if ! DATA=$(python3 -m headless stage check "$DEST" "$STAGE/manifest.json"); then
    echo "campaign_call.sh: the corpus is not complete yet; carry the parts named above in the next call"
    exit 0
  fi
fi
REPRODUCE=${REPRODUCE:-scripts/reproduce_gpu.sh}; start=$SECONDS
# the twins of every seed in order, each in the time left of WALL (the first gets all of it)
runs=()
for seed in ${SEED//,/ }; do
  if [[ "$seed" == *:* ]]; then runs+=("$seed"); continue; fi  # SEED:WHAT, as named
  [ "$FLAVOUR" != hf-head ] && runs+=("$seed:$FLAVOUR")
  { [ "$FLAVOUR" = hf-head ] || [ "${VANILLA_HF:-0}" = 1 ]; } && runs+=("$seed:hf-head")
done
for i in "${!runs[@]}"; do
  seed=${runs[i]%%:*}; what=${runs[i]#*:}; left=$((WALL - (SECONDS - start)))
  [ "$i" = 0 ] && left=$WALL  # the first always runs: it may be a resumed piece's last minutes
  if [ "$i" != 0 ] && [ "$left" -lt 60 ]; then
    echo "campaign_call.sh: ${left}s left of WALL=${WALL}: seed $seed's $what twin(s), and any after them, run in the next call"
    exit 0
  fi
  if [ "$what" = hf-head ]; then  # the paper's baseline: HF's head at every position, its own results folder
    RESULTS_TAG=hf-head DATA_ROOT=$DATA WALL=$left bash "$REPRODUCE" "$STUDY" vanilla "seed=$seed" \
      "vanilla_pretrain=[objective.loss_implementation=hf]" "$@"; rc=$?
  else
    DATA_ROOT=$DATA WALL=$left bash "$REPRODUCE" "$STUDY" "$what" "seed=$seed" "$@"; rc=$?
  fi
  [ "$rc" = 0 ] || exit "$rc"  # stopped at WALL or failed: the next call resumes from here
done
exit 0
