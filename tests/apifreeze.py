"""Freezes a lab region's API server for a while (SIGSTOP, then SIGCONT), as a production control
plane that stops answering during its own upgrade (#11): connections are accepted by the kernel
and never answered, exactly what a frozen apiserver behind a load balancer looks like.

    with frozen("icn-eu-west"):          # frozen inside the block
        ...
    thaw = freeze_for("icn-eu-west", 5, when=rollout_started)  # in the background
    run = run_playbook(...)
    thaw.join()

Only the kube-apiserver process that the lab recorded (lab.json, pids) is signalled, after
checking that the pid still runs a kube-apiserver. Keep each freeze under about 8 s: the
region's kube-controller-manager and kube-scheduler renew their leader leases through that API
server (kwokctl runs them with leader election, renew deadline 10 s) and one that cannot renew
exits, and nothing restarts it. To test a freeze longer than the grace, make the grace short
(api_grace / rollout_api_grace of 2 s) rather than the freeze long."""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from labkit import lab_state

MAX_FREEZE = 8.0


def apiserver_pid(context: str) -> int:
    state = lab_state()
    assert state is not None, "no lab is running"
    pid = state["pids"][context]["kube-apiserver"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    assert cmdline.endswith(b"kube-apiserver"), f"pid {pid} of {context} is {cmdline!r} now"
    return pid


@contextmanager
def frozen(context: str):
    """The API server of `context` stopped for the time of the block; continued whatever happens."""
    pid = apiserver_pid(context)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def freeze_for(context: str, seconds: float, when: Callable[[], object] | None = None,
               poll: float = 0.2, wait_up_to: float = 600) -> threading.Thread:
    """In the background: once `when()` returns something truthy (polled; at once without it),
    freezes the API server of `context` for `seconds`. Returns the thread (join it to be sure the
    server runs again; it is not a daemon, so the server is continued even if the test fails).
    The thread's `frozen_at` is the time.monotonic() of the freeze, None if `when` never held."""
    assert seconds <= MAX_FREEZE, (
        f"a freeze of {seconds}s would make {context}'s controller-manager lose its lease and exit")

    def holds() -> bool:
        try:
            return when is None or bool(when())
        except Exception:  # an API error while polling: not yet
            return False

    def run():
        deadline = time.monotonic() + wait_up_to
        while not holds():
            if time.monotonic() > deadline:
                return
            time.sleep(poll)
        with frozen(context):
            thread.frozen_at = time.monotonic()
            time.sleep(seconds)

    thread = threading.Thread(target=run, name=f"freeze-{context}")
    thread.frozen_at = None
    thread.start()
    return thread
