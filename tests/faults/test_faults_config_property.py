"""Property: mutating a valid YAML config, load_config returns a valid Config or raises ConfigError."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import faults_tally
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launch.config import Config, ConfigError, derive, from_dict, load_config, to_dict

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
BASE = yaml.safe_load(SMOKE.read_text())
PATHS = [(s, k) for s, sec in BASE.items() for k in sec]
SEEN = {"valid": 0, "config_error": 0}

leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                 st.lists(st.integers(-5, 300), max_size=4),
                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
edit = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), leaf),
    st.tuples(st.just("drop"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("add"), st.sampled_from(sorted(BASE)), st.text(min_size=1, max_size=10)),
    st.tuples(st.just("section"), st.sampled_from(sorted(BASE)), leaf),
)


def _mutate(data: dict, edits) -> dict:
    data = copy.deepcopy(data)
    for op, where, value in edits:
        sec = where[0] if op in ("set", "drop") else where
        if op != "section" and not isinstance(data.get(sec), dict):
            continue  # the section was replaced by a non-mapping earlier
        if op == "set":
            data[where[0]][where[1]] = value
        elif op == "drop":
            data[where[0]].pop(where[1], None)
        elif op == "add":
            data[where][value] = 1
        else:
            data[where] = value
    return data


def _valid(cfg: Config) -> bool:
    """A usable config: round-trips, passes derive again, sane core values."""
    again = derive(from_dict(to_dict(cfg)))
    return (isinstance(cfg, Config) and to_dict(again) == to_dict(cfg) and cfg.model.T >= 1
            and cfg.data.batch_size >= 1 and math.isfinite(cfg.optim.lr) and cfg.optim.lr > 0
            and len(cfg.data.input_size) == 3
            and all(isinstance(v, int) and v > 0 for v in cfg.data.input_size))


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(edit, min_size=1, max_size=3))
def test_mutated_yaml_gives_valid_config_or_config_error(tmp_path_factory, edits):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(_mutate(BASE, edits)))
    try:
        cfg = load_config(path, notice=lambda *_: None)
    except ConfigError as e:
        assert str(e).startswith(str(path)) or "command line" in str(e), str(e)
        SEEN["config_error"] += 1
        return
    assert _valid(cfg), (edits, to_dict(cfg))
    SEEN["valid"] += 1


def test_property_tally():
    """Record the property test's outcome in the session summary (runs after it: same module, file order)."""
    n = SEEN["valid"] + SEEN["config_error"]
    assert n > 0
    for _ in range(SEEN["config_error"]):
        faults_tally.hostile("mutated YAML config", True, log=False)
    faults_tally.LOG.append(f"hypothesis: {n} mutated configs: {SEEN['valid']} valid Config, "
                            f"{SEEN['config_error']} ConfigError, 0 other outcomes")
