#!/bin/bash
# s9 baseline: A/A at --threads 1 (quick, resnet50), current code
cd /work/main
. .venv/bin/activate
set -x
date -u
python3 /tmp/meas/quiet_gate.py 3
for S in quick resnet50; do
A=results/aa-$S-t1-s9-20261202
mkdir -p $A
( time python benchmarks/aa_compare.py $S --backends torch numpy-im2col --threads 1 --out $A ) > $A/aa_compare.txt 2>&1
python benchmarks/repeatability.py $(ls -d $A/2*[0-9a-f] | grep -v x1 | head -2) > $A/repeatability.txt 2>&1
rm -rf $A/scaled-*
date -u
done
echo ALL DONE
