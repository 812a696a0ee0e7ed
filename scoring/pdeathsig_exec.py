"""Exec a command that gets SIGKILL when the launcher dies: `python -I -S pdeathsig_exec.py PARENT_PID ARGV...`.

The launcher runs its children through this shim rather than a `preexec_fn`: Python code between fork and exec in a
process that holds gRPC's threads is not safe (it crashed with SIGSEGV in the at-fork hooks), while a fresh
interpreter that only calls prctl(2) and execvp(2) is. The death signal survives the exec. Standard library only,
so it starts in milliseconds with `-S`.
"""

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main() -> None:
    parent = int(sys.argv[1])
    argv = sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the launcher died before prctl took effect: nobody would kill us later
        sys.exit(1)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
