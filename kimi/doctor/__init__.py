"""``python -m kimi doctor``: walk every upstream step with one token and say which one breaks.

``steps`` holds the walk (through the real adapters), ``diagnosis`` the reading of a failure,
``report`` the output, ``wire`` the recording of what crossed the wire, ``masking`` and
``capture`` the masked capture file a bug report can carry and the emulator can replay.
"""

from .cli import main, run_doctor

__all__ = ["main", "run_doctor"]
