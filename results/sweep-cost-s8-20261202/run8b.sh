#!/bin/bash
# session-8 measurements, part 2. Sequential, nothing else running.
cd /work/main
. .venv/bin/activate
set -x
date -u
python3 /tmp/meas/quiet_gate.py 5
G=results/race-vs-exhaustive-googlenet_v3-s8b-20261202
mkdir -p $G
( time python benchmarks/race_vs_exhaustive.py results/race-vs-exhaustive-googlenet_v3-20261201/googlenet_v3_every3rd.txt --threads 2 --backends torch numpy-im2col numpy-fft onnxruntime openvino numba --noise-floor --out $G ) > $G/race_vs_exhaustive.txt 2>&1
date -u
python3 /tmp/meas/quiet_gate.py 5
G=results/race-vs-exhaustive-resnet50-s8-20261202
mkdir -p $G
( time python benchmarks/race_vs_exhaustive.py resnet50 --threads 2 --backends torch numpy-im2col numpy-fft onnxruntime openvino numba --noise-floor --out $G ) > $G/race_vs_exhaustive.txt 2>&1
date -u
python3 /tmp/meas/quiet_gate.py 5
A=results/aa-quick-s8-20261202
mkdir -p $A
( time python benchmarks/aa_compare.py quick --backends torch numpy-im2col --threads 2 --out $A ) > $A/aa_compare.txt 2>&1
python benchmarks/repeatability.py $(ls -d $A/2*[0-9a-f] | grep -v x1 | head -2) > $A/repeatability.txt 2>&1
date -u
python3 /tmp/meas/quiet_gate.py 5
R=results/sweep-cost-s8-20261202
for v in after before; do
  if [ $v = before ]; then dir=/tmp/old; else dir=/work/main; fi
  ( cd $dir && time python -m convbench sweep resnet50 --backends torch numpy-im2col --threads 2 --no-cache --out /work/main/$R/resnet50-$v ) > $R/resnet50-$v-$(date +%H%M%S).txt 2>&1
done
date -u
echo ALL DONE
