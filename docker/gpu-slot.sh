#!/bin/sh
# atelier-gpu-slot COMMAND...: run COMMAND on one GPU of this host that no other replica holds.
#
# `docker compose up --scale gpu-worker=N` starts N identical containers that each see every GPU of the
# host: compose cannot hand replica i the device i. So each takes a lock per GPU, in index order, on a
# volume that the replicas of one host share, and runs on the first GPU whose lock it gets. The lock
# lives as long as COMMAND (which inherits the open file), so a replica that stops frees its GPU for
# the next one. More replicas than GPUs: the extra ones exit, saying so, instead of doubling up.
#
#   GPU_SLOT_DIR    where the lock files are (default /run/atelier/gpu-slots, the gpu-slots volume)
#   GPU_SLOT_COUNT  how many GPUs to share out (default: the /dev/nvidiaN devices the container sees)
set -eu

dir="${GPU_SLOT_DIR:-/run/atelier/gpu-slots}"
count="${GPU_SLOT_COUNT:-$(find /dev -maxdepth 1 -name 'nvidia[0-9]*' 2>/dev/null | wc -l)}"
if [ "$count" -lt 1 ]; then
    echo "atelier-gpu-slot: this container sees no NVIDIA GPU (no /dev/nvidiaN): is the NVIDIA container" \
         "runtime installed, and does the service reserve GPUs?" >&2
    exit 78
fi
mkdir -p "$dir"

i=0
while [ "$i" -lt "$count" ]; do
    exec 9>"$dir/gpu$i.lock"
    if flock -n 9; then
        # Indices in PCI order, the order nvidia-smi prints, whatever CUDA would call fastest.
        export CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES="$i"
        echo "atelier-gpu-slot: GPU $i of $count on this host" >&2
        exec "$@"
    fi
    i=$((i + 1))
done
exec 9>&-
echo "atelier-gpu-slot: all $count GPUs of this host are held by other replicas;" \
     "run at most $count gpu-worker replicas here" >&2
exit 75
