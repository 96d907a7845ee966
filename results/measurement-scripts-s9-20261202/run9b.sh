#!/bin/bash
# s9: A/A at --threads 2 with the SIMD canary (from a worktree snapshot, so edits in /work/main cannot leak in)
cd /tmp/wt9
. /work/main/.venv/bin/activate
export PYTHONPATH=/tmp/wt9
set -x
date -u
python -c "import convbench,sys; print(convbench.__file__)"
python3 /tmp/meas/quiet_gate.py 3
for S in resnet50 quick; do
A=/work/main/results/aa-$S-s9-20261202
mkdir -p $A
( time python benchmarks/aa_compare.py $S --backends torch numpy-im2col --threads 2 --out $A ) > $A/aa_compare.txt 2>&1
python benchmarks/repeatability.py $(ls -d $A/2*[0-9a-f] | grep -v x1 | head -2) > $A/repeatability.txt 2>&1
rm -rf $A/scaled-*
date -u
done
echo ALL DONE
