#!/usr/bin/env bash
# The LibTorch API the project may use must exist in LibTorch 1.13 (Debian, here) and 2.x (the CUDA builds of the
# PyTorch distribution on GPU machines). Deprecated calls are caught by the compiler with -DRALA_STRICT_API=ON
# (-Werror=deprecated-declarations); this script catches the 1.13 names that 2.x removed or changed without a
# deprecation attribute. Run by ctest (api_compat) and by CI. Usage: scripts/check-api.sh [SOURCE_ROOT]
set -euo pipefail
root="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$root"
dirs=(attention_variants models analysis experiments reports tests benchmarks)
# pattern <TAB> why (what to use instead)
rules=$(cat <<'RULES'
\.data<[a-zA-Z_:0-9 ]+>\(	Tensor::data<T>() is gone in 2.x: use data_ptr<T>()
\.type\(\)\.(scalarType|backend|is_cuda)	Tensor::type() (DeprecatedTypeProperties) is gone in 2.x: use scalar_type(), device()
\.is_variable\(\)	Tensor::is_variable() is gone in 2.x: every tensor is a variable
\bAT_CHECK\(	AT_CHECK is gone: use TORCH_CHECK
\bTHCudaCheck\(|\bTHArgCheck\(	TH macros are gone: use C10_CUDA_CHECK / TORCH_CHECK
c10::guts::make_unique	c10::guts::make_unique is gone in 2.x: use std::make_unique
torch::jit::script::Module	torch::jit::script::Module is gone in 2.x: use torch::jit::Module
ProcessGroup::(Work|Options)\b	ProcessGroup::Work/Options moved in 2.x: use c10d::Work and the backend's own Options
intrusive_ptr<(c10d::)?ProcessGroup>	ProcessGroupGloo/NCCL derive from c10d::Backend in 2.x, not ProcessGroup: hold the concrete type
c10d::broadcast_coalesced\(	c10d::broadcast_coalesced takes a ProcessGroup (a Backend in 2.x is not one): broadcast flat buckets yourself
\bat::native::	at::native is internal and changes between releases: use the public at:: / torch:: functions
c10d::Reducer\b	c10d::Reducer's constructor changed between 1.13 and 2.x and needs a header Debian does not ship
RULES
)
status=0
while IFS=$'\t' read -r pattern why; do
  [ -z "$pattern" ] && continue
  if hits=$(grep -rnE --include='*.cpp' --include='*.h' --include='*.hpp' "$pattern" "${dirs[@]}" 2>/dev/null \
            | grep -v 'scripts/check-api.sh'); then
    while IFS= read -r hit; do
      echo "check-api: $hit: $why" >&2
    done <<< "$hits"
    status=1
  fi
done <<< "$rules"
if [ "$status" -eq 0 ]; then
  echo "check-api: no 1.13-only LibTorch API in ${dirs[*]}"
fi
exit "$status"
