"""The fuzz targets of `make fuzz`, bounded, inside `make test` (SRS-SEC-004): every parser a
user feeds ends mutated seed inputs in a result or its documented error."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cad_tools.fuzz.seeds import write_seeds
from cad_tools.fuzz.targets import check, targets

TARGETS = targets()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    folders = write_seeds(tmp_path_factory.mktemp("seeds"))
    return {name: [p.read_bytes() for p in sorted(folder.iterdir())] for name, folder in folders.items()}


#: one edit of a seed: (kind, relative position, byte values)
edits = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete"]), st.floats(0, 1),
                           st.binary(min_size=1, max_size=8)), min_size=1, max_size=6)


def mutate(data: bytes, changes: list[tuple[str, float, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, where, value in changes:
        at = int(where * max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[at] ^= value[0] or 1
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = value
        elif kind == "delete":
            del out[at:at + len(value)]
    return bytes(out)


@pytest.mark.req("SRS-SEC-004")
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_seeds_end_in_a_result_or_a_documented_error(name: str, seeds: dict[str, list[bytes]]) -> None:
    assert seeds[name], f"no seeds for {name}"
    for seed in seeds[name]:
        TARGETS[name].run(seed)  # every seed itself gives a result

    @settings(max_examples=120, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.integers(0, len(seeds[name]) - 1), edits)
    def one(index: int, changes: list[tuple[str, float, bytes]]) -> None:
        check(TARGETS[name], mutate(seeds[name][index], changes))

    one()


#: inputs that crashed a target, kept as regressions (tests/data/fuzz/<target>/): found by `make fuzz`, or
#: by schemathesis or review where the same parser is reached another way (the outcomes CR file)
FOUND = sorted((Path(__file__).resolve().parents[1] / "data" / "fuzz").glob("*/*"))


@pytest.mark.req("SRS-SEC-004")
@pytest.mark.parametrize("path", FOUND, ids=[f"{p.parent.name}-{p.name[:18]}" for p in FOUND])
def test_inputs_the_fuzzer_found_end_in_a_result_or_a_documented_error(path: Path) -> None:
    check(TARGETS[path.parent.name], path.read_bytes())  # raises anything else
