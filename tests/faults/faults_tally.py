"""Session-wide counts of injected faults and hostile inputs (filled by the tests, printed by conftest)."""
from __future__ import annotations

COUNTS = {"injected": 0, "survived": 0, "tried": 0, "rejected_cleanly": 0}
LOG: list[str] = []


def fault(name: str, survived: bool) -> None:
    """Record one injected fault and whether the system survived it."""
    COUNTS["injected"] += 1
    COUNTS["survived"] += int(bool(survived))
    LOG.append(f"fault {name}: {'survived' if survived else 'FAILED'}")


def hostile(name: str, clean: bool, log: bool = True) -> None:
    """Record one hostile input and whether it was rejected with one clear error."""
    COUNTS["tried"] += 1
    COUNTS["rejected_cleanly"] += int(bool(clean))
    if log or not clean:
        LOG.append(f"input {name}: {'rejected cleanly' if clean else 'NOT clean'}")


def line() -> str:
    """The summary line printed at the end of the session."""
    c = COUNTS
    return (f"faults: injected={c['injected']} survived={c['survived']}; "
            f"inputs: tried={c['tried']} rejected_cleanly={c['rejected_cleanly']}")
