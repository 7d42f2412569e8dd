"""The stack, as an explicit list of steps (greppable; no registry).

Each module owns one part of the stack; its docstring says what it records and
its destroy order. The engine orders them by their `requires`.
"""

from __future__ import annotations

from exaprov.engine import Step
from exaprov.steps.network import NAT, NETWORK

STEPS: tuple[Step, ...] = (NETWORK, NAT)
