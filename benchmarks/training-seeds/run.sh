#!/usr/bin/env bash
# Three trained networks per recipe for the comparisons that must cover training (benchmarks/README.md, "Three
# trained networks"): the default recipe (cfgutils/configs/default.yaml) at label dropout 0, 0.1 and 0.3, training
# seeds 0, 1, 2. Every step resumes: a finished checkpoint is not trained again (an unfinished one continues), a
# finished cell of `experiment classifier` is not sampled again. Networks go to data/models/training-seeds/ (not
# committed: the same command trains them again); the per-network runs and the comparisons are committed here.
# Usage: bash benchmarks/training-seeds/run.sh   (about 2 hours on one core of a 2-core CPU; OMP_NUM_THREADS=1)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
models=data/models/training-seeds
runs=benchmarks/training-seeds/runs
compare=benchmarks/training-seeds/compare
classifier=data/pretrained/classifier.pt
n=34  # per class, scale and sampling seed: 1,020 samples per cell over seeds 0, 1, 2
mkdir -p "$models" "$runs" "$compare"

network() {  # network P SEED: the checkpoint of the default recipe at label dropout P, training seed SEED
    if [ "$1" = 0 ] && [ "$2" = 0 ]; then echo data/pretrained/no-dropout.pt; else echo "$models/default-p$1-seed$2.pt"; fi
}

train() {  # train P SEED
    local out
    out=$(network "$1" "$2")
    if python -c "import sys, torch; sys.exit(0 if torch.load('$out', weights_only=True)['metadata'].get('complete') else 1)" 2>/dev/null; then
        return
    fi
    local resume=()
    [ -f "$out" ] && resume=(-l "$out")
    python -m cfgutils train "$out" -c default --p-uncond "$1" --seed "$2" "${resume[@]}" --no-progress \
        --run-dir "out/runs/default-p$1-seed$2"
}

evaluate() {  # evaluate P SEED NAME [experiment classifier flags...]
    local p=$1 seed=$2 name=$3
    shift 3
    python -m cfgutils experiment classifier "$(network "$p" "$seed")" "$classifier" "$runs/$name" --n-per-class "$n" "$@"
}

for seed in 0 1 2; do
    for p in 0.1 0.3 0; do train "$p" "$seed"; done
    evaluate 0.1 "$seed" "p0.1-seed$seed" --scales 0 1 2 11
    evaluate 0.1 "$seed" "p0.1-seed$seed-interval" --scales 11 --guidance interval --interval-sigma 0.5 2  # the default when these runs were made
    evaluate 0.3 "$seed" "p0.3-seed$seed" --scales 0 1 2
    evaluate 0 "$seed" "p0-seed$seed" --scales 1
done

each() { for seed in 0 1 2; do echo "$runs/$1-seed$seed${2:-}"; done; }
python -m cfgutils experiment paired "$compare/interval-vs-cfg-w10" --a $(each p0.1 -interval) --b $(each p0.1) \
    --w 10 --names interval cfg
python -m cfgutils experiment paired "$compare/w1-vs-w0" --a $(each p0.1) --b $(each p0.1) --w 1 --w-b 0 \
    --names "w=1" "w=0"
python -m cfgutils experiment paired "$compare/p0-vs-p0.1-w0" --a $(each p0) --b $(each p0.1) --w 0 \
    --names "p=0" "p=0.1"
for w in -1 0 1; do
    python -m cfgutils experiment paired "$compare/p0.1-vs-p0.3-w$w" --a $(each p0.1) --b $(each p0.3) --w "$w" \
        --names "p=0.1" "p=0.3"
done
python -m cfgutils experiment across-networks "$compare/default-recipe" $(each p0.1)
