#!/usr/bin/env bash
# Run one CI job's command so that it ends, QEMUs included, when the job must end:
#   scripts/ci-job.sh <command> [args...]
# Why: a GitLab job's bound and gitlab-ci-local differ. gitlab-ci-local enforces no `timeout:` and
# leaves a job's children running when it is stopped; QEMU runs in a session of its own (the harness
# starts it so), so even a runner that kills the job's process group leaves it behind. Here:
# - the command runs in a process group of its own, bounded by the job's timeout: CI_JOB_TIMEOUT
#   (seconds, set by GitLab's runner) or JOB_TIMEOUT_S (the job's own variable, equal to its
#   `timeout:`; tests/unit/test_ci_pipeline.py checks that), less END_GRACE_S, so the command is
#   ended by us before the runner ends us;
# - it is also ended when CI_LOCAL_PID (make ci-local's own PID) is gone: gitlab-ci-local was
#   stopped, or SIGTERM, SIGINT or SIGHUP reach this script;
# - ended means SIGTERM to the group (pytest's teardown then ends its QEMUs by PID), END_GRACE_S
#   to finish, SIGKILL; then every QEMU still listed in NVME_HOTSWAP_PID_DIR (each launch leaves a
#   file named by its PID holding its QMP socket's path) is ended by that PID, if that PID's command
#   line still holds the path (not a process that took the PID later).
# Exit status: the command's; 124 if it ran over its bound, 143 if it was ended from outside.
set -uo pipefail

[ $# -gt 0 ] || { echo "usage: scripts/ci-job.sh <command> [args...]" >&2; exit 2; }
bound=${CI_JOB_TIMEOUT:-${JOB_TIMEOUT_S:-}}
case "$bound" in
  ''|*[!0-9]*) echo "ci-job: no job bound: set JOB_TIMEOUT_S (seconds, the job's timeout:) or run under GitLab (CI_JOB_TIMEOUT)" >&2
               exit 2 ;;
esac
grace=${END_GRACE_S:-60}
limit=$(( bound > 2 * grace ? bound - grace : bound / 2 ))

pid_dir=$(mktemp -d "${TMPDIR:-/tmp}/nvme-hotswap-pids.XXXXXX")
export NVME_HOTSWAP_PID_DIR=$pid_dir

# End every QEMU still listed, by its PID.
end_listed_qemus() {
  local note pid token
  for note in "$pid_dir"/*; do
    [ -e "$note" ] || continue
    pid=${note##*/}
    token=$(cat "$note")
    if [ -n "$token" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$token"; then
      echo "ci-job: ending QEMU pid $pid, left running by the job (QMP $token)" >&2
      kill -TERM "$pid" 2>/dev/null
      for _ in 1 2 3 4 5; do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$note"
  done
}

child=
# End the command's process group by its PID: SIGTERM, the grace, SIGKILL.
end_group() {
  local why=$1 waited=0; shift
  [ -n "$child" ] || return 0
  if kill -0 "$child" 2>/dev/null; then
    echo "ci-job: ending \`$*\` (pid $child): $why" >&2
    kill -TERM -- "-$child" 2>/dev/null
    while kill -0 "$child" 2>/dev/null && [ "$waited" -lt "$grace" ]; do sleep 1; waited=$((waited + 1)); done
    kill -KILL -- "-$child" 2>/dev/null
  fi
}

stopped=
trap 'stopped="a signal reached ci-job.sh"' TERM INT HUP
setsid "$@" &
child=$!
start=$SECONDS
why='' rc=''
while kill -0 "$child" 2>/dev/null; do
  if [ -n "$stopped" ]; then why=$stopped rc=143
  elif [ $(( SECONDS - start )) -ge "$limit" ]; then
    why="over its bound of ${limit} s (job timeout ${bound} s less ${grace} s to end)" rc=124
  elif [ -n "${CI_LOCAL_PID:-}" ] && ! kill -0 "$CI_LOCAL_PID" 2>/dev/null; then
    why="make ci-local (pid $CI_LOCAL_PID) is gone" rc=143
  fi
  [ -z "$why" ] || break
  sleep 1
done
if [ -n "$why" ]; then
  end_group "$why" "$@"
  wait "$child" 2>/dev/null
else
  wait "$child"
  rc=$?
fi
end_listed_qemus
rmdir "$pid_dir" 2>/dev/null
exit "$rc"
