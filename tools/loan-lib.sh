# Shared by tools/gpu-loan and tools/gpu-diag (sourced, not run): the cap on a device command's time, the output
# folder, and a command under a hard limit. Each expects $root, $out, $total and, where used, $bundle.

# loan_cap TOOL: $total as a decimal number, capped at 575 s (one device command runs at most 600 s, .offline/run's
# start included: boxes sized for more would be cut by the device tool, not by their own limits); $capped says so.
loan_cap() {
  total=$(( 10#$total ))
  capped=""
  if (( total > 575 )); then
    capped="--total $total capped at 575 s (a device command's 600 s limit, less the runtime's start)"
    total=575
    echo "$1: $capped"
  fi
}

# loan_fresh_out TOOL MARKER WHOSE: empties $out, which must not hold the project or the home directory, nor files
# other than an earlier run's (MARKER, its summary, names one: a warm machine keeps /tmp, and an earlier run's files
# would be compared and bundled again); $bundle, when set, must be neither inside $out nor around it.
loan_fresh_out() {
  local tool=$1 marker=$2 whose=$3 abs
  mkdir -p "$out"
  abs=$(cd "$out" && pwd)
  case "$root/" in "$abs"/*) echo "$tool: --out $out holds the project ($root): it would be emptied" >&2; exit 2 ;; esac
  case "${HOME:-/nonexistent}/" in "$abs"/*) echo "$tool: --out $out holds the home directory: it would be emptied" >&2; exit 2 ;; esac
  if [ -n "$(ls -A "$abs")" ] && [ ! -f "$abs/$marker" ]; then
    echo "$tool: --out $out holds files that are not $whose (no $marker): give a new or empty folder" >&2; exit 2
  fi
  if [ -n "${bundle:-}" ]; then
    mkdir -p "$bundle"
    case "$(cd "$bundle" && pwd)/" in "$abs"/*) echo "$tool: --bundle $bundle is inside --out $out" >&2; exit 2 ;; esac
    case "$abs/" in "$(cd "$bundle" && pwd)"/*) echo "$tool: --out $out is inside --bundle $bundle" >&2; exit 2 ;; esac
  fi
  rm -rf -- "$out"
  mkdir -p "$out"
}

# loan_sources: one line saying whether the packed classes were built from the carried tree (tools/gpu-pack wrote the
# tree's tools/source-hash into .offline/sources.txt); a line that starts with "**" when they were not.
loan_sources() {
  if [ ! -f .offline/sources.txt ]; then echo "sources: no .offline/sources.txt (not packed by tools/gpu-pack)"; return; fi
  local now packed
  now=$(tools/source-hash 2>/dev/null || echo unknown)
  packed=$(cat .offline/sources.txt)
  if [ "$now" = "$packed" ]; then echo "sources: the packed classes are the carried tree's ($now)"
  else echo "**sources: the packed classes were built from other sources ($packed) than the carried tree ($now): rerun tools/gpu-pack; the figures below are of the packed code**"; fi
}

# loan_timed SECS CMD...: CMD under a hard limit of SECS (SIGTERM, then SIGKILL 10 s later), and afterwards whatever is
# left of its process group killed too: timeout escalates only while its own child lives, so a JVM below a shell that
# ended at SIGTERM, or one that catches it to write a checkpoint, went on holding the GPU into the next step. Returns
# CMD's status (124 or 137 at the limit).
loan_timed() {
  local secs=$1 tp rc
  shift
  timeout -k 10 "$secs" "$@" &
  tp=$!
  wait "$tp"
  rc=$?
  kill -KILL -- "-$tp" 2> /dev/null
  return $rc
}
