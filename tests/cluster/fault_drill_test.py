"""cluster/fault_drill.py: which chief log lines become drill events."""

import pytest

from cluster import fault_drill

_PREFIX = "I1207 06:54:39.103826 140661954180800 loop.py:189] "


@pytest.mark.parametrize("message,event", [
    ("step 120/1500: loss 6.1 (softmax 6.1), 3000 examples/s", ("progress", 120, "")),
    ("resumed from /runs/m/checkpoints/ckpt-100 at step 100", ("resumed", 100, "ckpt-100")),
    # A chief restarted before the first checkpoint resumes at step 0: without this
    # event the drill waited for a resume that never came and fired no further fault.
    ("no checkpoint in /runs/m/checkpoints: training from scratch", ("resumed", 0, "no checkpoint")),
    ("saved checkpoint /runs/m/checkpoints/ckpt-200", ("saved", 200, "")),
    ("Cluster successfully recovered with 2 workers", ("recovered", None, "")),
    ("A parameter server failed: Socket closed. Its variables are gone", ("ps_failed", None, "")),
    ("evaluation (leave_last_one_out, 4000 users)", None),
])
def test_chief_log_lines_become_events(message, event):
  assert fault_drill.chief_event(_PREFIX + message) == event
