#!/bin/bash
# s9: interleaved A/A pairs (problem by problem), quick then resnet50, then aa_compare --runs
cd /tmp/wt9
. /work/main/.venv/bin/activate
export PYTHONPATH=/tmp/wt9
set -x
date -u
python3 /tmp/meas/quiet_gate.py 3
for S in quick resnet50; do
D=/work/main/results/aa-interleaved-$S-s9-20261202
mkdir -p $D
( time python benchmarks/race_vs_exhaustive_interleaved.py $S --threads 2 --backends torch numpy-im2col --strategies exhaustive exhaustive --out $D ) > $D/interleaved.txt 2>&1
date -u
done
for S in quick resnet50; do
D=/work/main/results/aa-interleaved-$S-s9-20261202
python benchmarks/aa_compare.py --runs $D/a $D/b --out $D > $D/aa_compare.txt 2>&1
python benchmarks/repeatability.py $D/a $D/b > $D/repeatability.txt 2>&1
rm -rf $D/scaled-*
done
date -u
echo ALL DONE
