#!/bin/bash
cd /work/main
. .venv/bin/activate
set -x
date -u
python3 /tmp/meas/quiet_gate.py 3
G=results/race-vs-exhaustive-googlenet_v3-s8d-20261202
mkdir -p $G
( time python benchmarks/race_vs_exhaustive.py results/race-vs-exhaustive-googlenet_v3-20261201/googlenet_v3_every3rd.txt --threads 2 --backends torch numpy-im2col numpy-fft onnxruntime openvino numba --out $G ) > $G/race_vs_exhaustive.txt 2>&1
date -u
echo ALL DONE
