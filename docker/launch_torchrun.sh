#!/usr/bin/env bash
# Launch train.py (or certify.py) with torchrun on one node or many (both pick up torchrun's environment).
#
#   docker/launch_torchrun.sh --nproc_per_node 8 -- fit --config configs/experiment/cifar10_resnet18.yaml --config configs/trainer/ddp.yaml
#   # 4 nodes x 8 GPUs: run on every node with its own --node_rank
#   docker/launch_torchrun.sh --nnodes 4 --nproc_per_node 8 --node_rank 0 --master_addr node0 --master_port 29500 \
#       -- fit --config configs/experiment/cifar10_resnet18.yaml --config configs/trainer/ddp.yaml
#   docker/launch_torchrun.sh --dry-run --nnodes 2 --nproc_per_node 4 -- fit --config configs/experiment/digits_smallcnn.yaml
#   # certification on 4 nodes x 8 GPUs (output on a shared file system; rank 0 merges the shards)
#   docker/launch_torchrun.sh --script certify.py --nnodes 4 --nproc_per_node 8 --node_rank 0 --master_addr node0 \
#       -- smoothing --checkpoint C --output /shared/certify/run1 --device cuda --n_samples 10000
#
# Options (environment variables of the same upper-case name are the defaults):
#   --nnodes N          number of nodes (NNODES, default 1)
#   --nproc_per_node P  processes (GPUs) per node (NPROC_PER_NODE, default: number of visible GPUs, else 1)
#   --node_rank R       this node's rank (NODE_RANK, default 0)
#   --master_addr A     rendezvous host (MASTER_ADDR, default 127.0.0.1)
#   --master_port P     rendezvous port (MASTER_PORT, default 29500)
#   --rdzv_id ID        rendezvous id shared by all nodes (RDZV_ID, default robustattr)
#   --script FILE       the script torchrun starts (SCRIPT, default train.py next to docker/)
#   --dry-run           print the command instead of running it
# Everything after -- goes to the script. For train.py --trainer.num_nodes and --trainer.devices
# are appended so Lightning's world size matches torchrun's; other scripts get the arguments as is.
set -euo pipefail

nnodes="${NNODES:-1}"
if command -v nvidia-smi >/dev/null 2>&1; then gpus=$(nvidia-smi -L 2>/dev/null | wc -l); else gpus=0; fi
nproc="${NPROC_PER_NODE:-$(( gpus > 0 ? gpus : 1 ))}"
node_rank="${NODE_RANK:-0}"
master_addr="${MASTER_ADDR:-127.0.0.1}"
master_port="${MASTER_PORT:-29500}"
rdzv_id="${RDZV_ID:-robustattr}"
script="${SCRIPT:-}"
dry_run=0
train_args=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --nnodes) nnodes="$2"; shift 2 ;;
    --nproc_per_node) nproc="$2"; shift 2 ;;
    --node_rank) node_rank="$2"; shift 2 ;;
    --master_addr) master_addr="$2"; shift 2 ;;
    --master_port) master_port="$2"; shift 2 ;;
    --rdzv_id) rdzv_id="$2"; shift 2 ;;
    --script) script="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; train_args=("$@"); break ;;
    *) echo "launch_torchrun.sh: unknown option $1 (use -- before train.py arguments)" >&2; exit 2 ;;
  esac
done

for v in nnodes nproc node_rank master_port; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "launch_torchrun.sh: $v must be a non-negative integer, got '${!v}'" >&2; exit 2; }
done
(( node_rank < nnodes )) || { echo "launch_torchrun.sh: node_rank $node_rank must be < nnodes $nnodes" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "$script" ]]; then
  script="${TRAIN_PY:-$here/../train.py}"
  [[ -f "$script" ]] || script="train.py"
fi
is_train=0
[[ "$(basename "$script")" == "train.py" ]] && is_train=1
if [[ ${#train_args[@]} -eq 0 ]]; then
  (( is_train )) || { echo "launch_torchrun.sh: give $(basename "$script")'s arguments after --" >&2; exit 2; }
  train_args=(fit --config configs/experiment/digits_smallcnn.yaml)
fi

cmd=(torchrun --nnodes "$nnodes" --nproc_per_node "$nproc" --node_rank "$node_rank"
     --rdzv_backend c10d --rdzv_endpoint "$master_addr:$master_port" --rdzv_id "$rdzv_id"
     "$script" "${train_args[@]}")
(( is_train )) && cmd+=(--trainer.num_nodes "$nnodes" --trainer.devices "$nproc")

if (( dry_run )); then
  printf '%q ' "${cmd[@]}"; printf '\n'
else
  exec "${cmd[@]}"
fi
