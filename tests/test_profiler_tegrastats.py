"""tegrastats: the parser on recorded lines of every Jetson family, and the sampler on a real subprocess."""

from __future__ import annotations

import os
import stat
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from genedge.profiler.tegrastats import (
    TegrastatsSampler,
    find_tegrastats,
    integrate_energy_j,
    parse_tegrastats_line,
    total_power_rail,
)

DATA = Path(__file__).parent / "data" / "tegrastats"
MIB = 2**20


def recorded(family: str) -> list[str]:
    """The tegrastats lines of ``DATA/<family>.txt`` (comment lines, naming each line's source, left out)."""
    lines = (DATA / f"{family}.txt").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


# Per recorded line: RAM used and total (MB), GR3D load, total rail and its current mW, timestamp.
EXPECTED = {
    "nano_tx1_tx2": [
        (613, 3964, 0, "POM_5V_IN", 900, None),
        (1180, 3965, 0, "POM_5V_IN", 4520, None),
        (1179, 3983, 0, "VDD_IN", 2532, None),
        (1345, 7829, 0, "VDD_IN", 2003, None),
        (2020, 7852, 0, "VDD_IN", 3140, None),
    ],
    "xavier": [
        (4083, 31919, 0, None, None, None),
        (14700, 15692, 0, None, None, None),
    ],
    "orin": [
        (6185, 7620, 63, "VDD_IN", 12479, datetime(2024, 11, 15, 8, 38, 9)),
        (3452, 7620, 0, "VDD_IN", 4824, datetime(2025, 6, 18, 11, 25, 24)),
    ],
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_parser_reads_every_recorded_line(family: str) -> None:
    lines = recorded(family)
    assert len(lines) == len(EXPECTED[family])
    for line, (used, total, load, rail, milliwatts, stamp) in zip(lines, EXPECTED[family]):
        sample = parse_tegrastats_line(line)
        assert (sample.ram_used_bytes, sample.ram_total_bytes) == (used * MIB, total * MIB)
        assert sample.gpu_load_percent == load
        assert total_power_rail(sample) == rail
        if rail is not None:
            assert sample.rails[rail][0] == milliwatts
        assert sample.timestamp == stamp
        # RAM, SWAP and IRAM look like rails ("RAM 613/3964MB") but are not.
        assert not {"RAM", "SWAP", "IRAM"} & set(sample.rails)


def test_parser_keeps_current_and_average_and_every_xavier_rail() -> None:
    sample = parse_tegrastats_line(recorded("xavier")[0])
    assert sample.rails == {
        "GPU": (0, 16),
        "CPU": (310, 432),
        "SOC": (931, 953),
        "CV": (0, 0),
        "VDDRQ": (466, 488),
        "SYS5V": (1522, 1559),
    }


def test_parser_rejects_a_line_that_is_not_tegrastats() -> None:
    with pytest.raises(ValueError, match=r"Expected a tegrastats line with 'RAM <used>/<total>MB'"):
        parse_tegrastats_line("Error: tegrastats must be run as root")


def test_energy_integrates_power_over_exactly_the_window() -> None:
    points = [(0.0, 10.0), (1.0, 20.0), (2.0, 20.0)]
    assert integrate_energy_j(points, 0.0, 2.0) == pytest.approx(15.0 + 20.0)
    # Clipped inside: from 0.5 s (15 W) to 1.5 s (20 W).
    assert integrate_energy_j(points, 0.5, 1.5) == pytest.approx((15 + 20) / 2 * 0.5 + 20 * 0.5)
    # Before the first and after the last sample the readings are held.
    assert integrate_energy_j([(1.0, 5.0)], 0.0, 2.0) == pytest.approx(10.0)


def fake_tegrastats(directory: Path, family: str, *, lines: int | None = None) -> Path:
    """A ``tegrastats`` executable printing ``family``'s recorded lines at ``--interval`` ms, cycling.

    With ``lines``, it exits after printing that many.
    """
    script = directory / "tegrastats"
    script.write_text(
        f"#!{sys.executable}\n"
        "import itertools, sys, time\n"
        "interval = int(sys.argv[sys.argv.index('--interval') + 1]) / 1000\n"
        f"lines = [l for l in open({str(DATA / f'{family}.txt')!r}) if l.strip() and not l.startswith('#')]\n"
        f"limit = {lines!r}\n"
        "for n, line in enumerate(itertools.cycle(lines)):\n"
        "    if limit is not None and n >= limit:\n"
        "        sys.exit(3)\n"
        "    print(line.strip(), flush=True)\n"
        "    time.sleep(interval)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    return tmp_path


def test_sampler_reads_a_real_subprocess_and_integrates_the_total_rail(on_path: Path) -> None:
    fake_tegrastats(on_path, "orin")
    executable = find_tegrastats()
    assert executable == str(on_path / "tegrastats")
    sampler = TegrastatsSampler(executable, interval_s=0.02)
    try:
        assert sampler.rail == "VDD_IN" and sampler.rail_reason is None
        with sampler.window() as window:
            time.sleep(0.2)
        reading = window.reading
    finally:
        sampler.close()
    assert reading.system_memory_bytes == 6185 * MIB  # the larger of the two recorded lines
    # Power alternates between the lines' 12.479 W and 4.824 W, so the average lies between them.
    assert 4.824 <= reading.average_power_w <= 12.479
    assert reading.energy_j == pytest.approx(reading.average_power_w * reading.seconds)
    assert reading.seconds >= 0.2 and reading.notes == {}
    assert sampler.failure == "the tegrastats sampler was closed"


def test_a_board_without_a_total_rail_gets_memory_and_no_energy(on_path: Path) -> None:
    sampler = TegrastatsSampler(str(fake_tegrastats(on_path, "xavier")), interval_s=0.02)
    try:
        with sampler.window() as window:
            time.sleep(0.05)
    finally:
        sampler.close()
    assert sampler.rail is None and "no total-input rail" in sampler.rail_reason
    assert "'SYS5V'" in sampler.rail_reason
    assert window.reading.energy_j is None and window.reading.notes["energy"] == sampler.rail_reason
    assert window.reading.system_memory_bytes in (4083 * MIB, 14700 * MIB)


def test_tegrastats_that_exits_is_a_note_not_a_hang(on_path: Path) -> None:
    sampler = TegrastatsSampler(str(fake_tegrastats(on_path, "orin", lines=1)), interval_s=0.02)
    try:
        with sampler.window() as window:
            time.sleep(0.1)
    finally:
        sampler.close()
    assert sampler.failure == "tegrastats exited with code 3"
    # The one sample stands for the whole window, and the note says the end was extrapolated.
    assert window.reading.energy_j == pytest.approx(12.479 * window.reading.seconds)
    assert "tegrastats exited with code 3" in window.reading.notes["energy"]
    assert "extrapolated" in window.reading.notes["energy"]
