#!/bin/bash
# s9 final code: quick A/A (2 threads), then a quick sweep with a process spinning on one core
cd /tmp/wt9
. /work/main/.venv/bin/activate
export PYTHONPATH=/tmp/wt9
set -x
date -u
python3 /tmp/meas/quiet_gate.py 3
A=/work/main/results/aa-quick-s9b-20261202
mkdir -p $A
( time python benchmarks/aa_compare.py quick --backends torch numpy-im2col --threads 2 --out $A ) > $A/aa_compare.txt 2>&1
python benchmarks/repeatability.py $(ls -d $A/2*[0-9a-f] | grep -v x1 | head -2) > $A/repeatability.txt 2>&1
rm -rf $A/scaled-*
date -u
L=/work/main/results/loaded-quick-s9-20261202
mkdir -p $L
python3 -c "import time
t=time.time()
while time.time()-t<400: pass" &
SP=$!
sleep 2
( time python -m convbench sweep quick --backends torch numpy-im2col --threads 2 --out $L --no-cache ) > $L/sweep.txt 2>&1
kill $SP
date -u
echo ALL DONE
