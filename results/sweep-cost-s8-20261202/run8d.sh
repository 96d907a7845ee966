#!/bin/bash
cd /work/main
while ! grep -q "ALL DONE" /tmp/meas/run8c.log; do sleep 5; done
set -x
date -u
T=results/tune-model-s8-20261202
mkdir -p $T
( time env CXX=/nonexistent /tmp/tv-venv/bin/python benchmarks/tune_model.py --threads 2 --backends torch numpy-im2col --out $T/runs ) > $T/tune_model.txt 2>&1
date -u
echo ALL DONE
