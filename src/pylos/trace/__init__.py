"""`pylos trace`: run a program natively once and write a manifest template for it.

`observe` (trace/observe.py) runs the command under a seccomp notification filter that only
records; `Run` (trace/record.py) is what one run saw; `render_template` (trace/template.py)
turns runs into a commented Gramine-syntax manifest template.
"""

from pylos.trace.observe import find_command, observe
from pylos.trace.record import Run, decode_runs, encode_runs
from pylos.trace.template import render_template

__all__ = ["Run", "decode_runs", "encode_runs", "find_command", "observe", "render_template"]
